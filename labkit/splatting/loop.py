"""Driving a fit: the one loop around ``Fit.train_step``, in memory or as a lab run.

The notebook's ``fit_2d`` / ``fit_3d`` and the phase's task (``labkit.splatting.task.run``:
``python -m labkit.train p50_splat2d``, ``labkit.done p50``) all call :func:`run_fit`. It
repeats the algorithm (``train_step``: render, loss, backward, Adam, now and then densify; see
``labkit.splatting.fit``) and does around it what every lab loop does, with
:class:`labkit.trainers.plumbing.LoopPlumbing`:

* evaluation every ``eval_every`` steps and at the last: ``eval/psnr``, ``eval/ssim``,
  ``eval/num_gaussians`` (3D: means over the held-out views), kept in the :class:`FitResult`;
* ``train/loss`` (mean over ``log_every`` steps), ``train/num_gaussians``, ``train/lr_means``,
  ``perf/steps_per_s``, ``perf/wall_s``, ``perf/cpu_s`` every ``log_every`` steps;
* with a ``run_dir``: ``metrics.jsonl``, TensorBoard (with the image ``render/target|render``) and
  checkpoints every ``ckpt_every`` steps and at the end (``labkit.splatting.checkpoints``);
* Ctrl-C / SIGTERM finish the step, save and return; a non-finite loss, metric or Gaussian
  raises ``TrainingDiverged`` and no checkpoint holds it.

Evaluation draws nothing from the fit's generator, so none of this changes the fit: a seed gives
the same Gaussians in memory and in a run folder. Explained in
notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from labkit.splatting.checkpoints import save_fit_checkpoint
from labkit.splatting.config import DIVERGED_ADVICE
from labkit.splatting.densify import DensifyConfig
from labkit.splatting.fit import Fit, ImageFit, SceneFit
from labkit.splatting.gaussians import Gaussians2D, Gaussians3D
from labkit.splatting.scene import SceneData
from labkit.trainers.guards import check_finite_metrics
from labkit.trainers.plumbing import LoopPlumbing, due
from labkit.utils.checkpoint import checkpoint_name
from labkit.utils.logging import get_logger
from labkit.utils.meters import AverageMeter

log = get_logger(__name__)

IMAGE_TAG = "render/target|render"


@dataclass
class FitResult:
    """What a fit returns. ``eval_steps[k]`` is the step at which ``psnr[k]``, ``ssim[k]`` and
    ``num_gaussians[k]`` were measured, after that step's update (for ``fit_3d``: means over the
    held-out views); ``loss`` has one entry per step run; ``renders`` maps chosen steps to
    ``[H, W, 3]`` images (the first held-out view for ``fit_3d``); ``seconds`` is the wall time
    of the fit and ``cpu_seconds`` its process CPU time (on a shared machine the fairer
    measure; a resumed run counts its earlier parts too); ``fit`` is the fit object itself (its
    state continues the fit); ``stopped_by`` is ``"max_steps"``, ``"stop_after"`` or a signal's
    name; ``last_checkpoint`` the newest file written (None without a run folder)."""

    gaussians: Gaussians2D | Gaussians3D
    eval_steps: list[int] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    num_gaussians: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    renders: dict[int, Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    fit: Fit | None = None
    stopped_by: str = "max_steps"
    last_checkpoint: Path | None = None

    @property
    def eval_history(self) -> list[dict[str, float]]:
        """The evaluations as rows: ``step``, ``eval/psnr``, ``eval/ssim``, ``eval/num_gaussians``."""
        rows = zip(self.eval_steps, self.psnr, self.ssim, self.num_gaussians)
        return [
            {"step": s, "eval/psnr": p, "eval/ssim": q, "eval/num_gaussians": float(n)}
            for s, p, q, n in rows
        ]


def side_by_side(target: Tensor, render: Tensor) -> Tensor:
    """``[H, W, 3]`` target and render → one ``[3, H, 2W + 2]`` image for TensorBoard."""
    gap = torch.ones(target.shape[0], 2, 3, dtype=target.dtype, device=target.device)
    return torch.cat([target, gap, render.clamp(0, 1)], dim=1).permute(2, 0, 1)


def run_fit(
    fit: Fit,
    eval_every: int,
    render_steps: Sequence[int] = (),
    progress: bool = False,
    *,
    stop_at: int | None = None,
    eval_at_start: bool = False,
    log_every: int = 0,
    run_dir: str | Path | None = None,
    ckpt_every: int = 0,
    config: dict | None = None,
    log_images: bool = False,
    run_state: dict | None = None,
) -> FitResult:
    """Run ``fit`` from its current step to ``fit.steps``, measuring as it goes (module docstring).

    Args:
        eval_every: evaluate every this many steps (0: only after the last).
        render_steps: steps at which to keep ``fit.preview()`` (0: the starting point).
        stop_at: stop after this step as if interrupted (``stopped_by="stop_after"``, no final
            evaluation); the means' learning rate still decays over ``fit.steps``.
        eval_at_start: also evaluate a fresh fit before its first step (a lab run's step 0).
        log_every: a ``train/*`` row every this many steps (0: only after the last).
        run_dir: where ``metrics.jsonl``, TensorBoard events and ``checkpoints/`` go (None: nothing is
            written); ``config``: the run's config, saved in every checkpoint.
        ckpt_every: with a ``run_dir``, a checkpoint every this many steps (0: only at the end).
        log_images: log the target and the render side by side at each evaluation.
        run_state: the ``extra["run"]`` of the checkpoint the fit was resumed from (its clocks
            and loss window count on; ``labkit.splatting.checkpoints.resume_from_checkpoint``).
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and config is None:
        raise ValueError("run_fit with a run_dir needs the run's config (saved in checkpoints).")
    state = {"wall_time_s": 0.0, "cpu_time_s": 0.0, "loss_window": [0.0, 0], **(run_state or {})}
    until = min(stop_at or fit.steps, fit.steps)
    result = FitResult(fit.gaussians, fit=fit)
    window = AverageMeter("loss")
    window.sum, window.count = state["loss_window"]
    first_step, call_started = fit.step, time.perf_counter()
    started = call_started - state["wall_time_s"]  # a resumed run counts on
    cpu_started = time.process_time() - state["cpu_time_s"]
    loop = LoopPlumbing(
        run_dir, total=fit.steps, initial=fit.step, desc=type(fit).__name__, progress=progress
    )

    def clocks() -> dict[str, float]:
        return {
            "perf/wall_s": time.perf_counter() - started,
            "perf/cpu_s": time.process_time() - cpu_started,
        }

    def evaluate() -> None:
        scores = {f"eval/{k}": v for k, v in fit.evaluate().items()}
        check_finite_metrics(fit.step, scores, DIVERGED_ADVICE)
        result.eval_steps.append(fit.step)
        result.psnr.append(scores["eval/psnr"])
        result.ssim.append(scores["eval/ssim"])
        result.num_gaussians.append(int(scores["eval/num_gaussians"]))
        loop.metrics.log(fit.step, scores)
        if log_images and loop.metrics.writer is not None:
            picture = side_by_side(fit.preview_target(), fit.preview())
            loop.metrics.log_image(IMAGE_TAG, picture, fit.step)

    def save() -> None:
        if run_dir is None or not loop.once("checkpoint", fit.step):
            return
        times = clocks()
        state.update(
            wall_time_s=times["perf/wall_s"],
            cpu_time_s=times["perf/cpu_s"],
            loss_window=[window.sum, window.count],
        )
        path = run_dir / "checkpoints" / checkpoint_name(fit.step)
        result.last_checkpoint = save_fit_checkpoint(path, fit, config, state)

    with loop:
        if fit.step == 0 and eval_at_start:
            evaluate()  # the starting point: eval/psnr at step 0 and the first picture
        if fit.step == 0 and 0 in render_steps:
            result.renders[0] = fit.preview()
        while fit.step < until and not loop.stopping:
            # ALGO: render, loss, backward, Adam, now and then densify (labkit.splatting.fit).
            loss = fit.train_step()
            step = fit.step

            # PLUMBING: guards, logging, evaluation, renders, checkpoints.
            check_finite_metrics(step, {"train/loss": loss}, DIVERGED_ADVICE)
            result.loss.append(loss)
            window.update(loss)
            loop.advance(1)
            if due(step - 1, step, log_every) or step == fit.steps:
                rate = (step - first_step) / max(time.perf_counter() - call_started, 1e-9)
                loop.metrics.log(
                    step,
                    {
                        "train/loss": window.avg,
                        "train/num_gaussians": len(fit.gaussians),
                        "train/lr_means": fit.optimizer.param_groups[0]["lr"],  # group 0: means
                        "perf/steps_per_s": rate,
                        **clocks(),
                    },
                )
                loop.bar.set_postfix(loss=f"{window.avg:.4f}", n=len(fit.gaussians))
                window.reset()
            if due(step - 1, step, eval_every) or step == fit.steps:
                evaluate()
            if step in render_steps:
                result.renders[step] = fit.preview()
            if due(step - 1, step, ckpt_every):
                save()
        if loop.stopping:
            log.warning("%s received: stopping at step %d", loop.stopping, fit.step)
        elif fit.step == fit.steps and result.eval_steps[-1:] != [fit.step]:
            evaluate()  # a resume of a finished run: its numbers once more
        save()  # at once, still shielded from a second Ctrl-C
        finished = fit.step >= fit.steps
        result.stopped_by = loop.stopping or ("max_steps" if finished else "stop_after")

    times = clocks()
    result.seconds, result.cpu_seconds = times["perf/wall_s"], times["perf/cpu_s"]
    result.gaussians = fit.gaussians.detach()
    return result


# ---------------------------------------------------------------- the notebook's fits, in memory


def fit_2d(
    image: Tensor,
    num_gaussians: int = 2000,
    steps: int = 1000,
    *,
    lr: dict[str, float] | None = None,
    means_lr_final_ratio: float = 0.05,
    densify: DensifyConfig | None = None,
    mode: str = "sum",
    loss: str = "l2",
    ssim_weight: float = 0.0,
    init: str = "image",
    eval_every: int = 100,
    render_steps: Sequence[int] = (),
    generator: torch.Generator | None = None,
    progress: bool = False,
    tile: int = 8,
) -> FitResult:
    """Fit ``num_gaussians`` 2D Gaussians to one image (GaussianImage, Zhang et al. 2024).

    Args:
        image: ``[H, W, 3]`` target in ``[0, 1]``.
        num_gaussians: starting N (densification may grow it up to ``densify.max_gaussians``).
        steps: Adam steps; one full-image render each.
        lr: per-parameter learning rates, defaults ``LR_2D`` (means in pixels per step).
        means_lr_final_ratio: the means' rate decays to this fraction of its start.
        densify: clone/split/prune settings, None = fixed N. Thresholds are in pixels: the
            gradient of the loss w.r.t. the mean in pixels, and the scale σ in pixels.
        mode: ``"sum"`` (GaussianImage's order-free sum) or ``"alpha"`` (compositing in index order).
        loss, ssim_weight: see ``image_loss``.
        init: ``"image"`` (at random pixels, with their colours) or ``"random"`` (random colours).
        eval_every: measure PSNR/SSIM every this many steps (and at the last step).
        render_steps: steps at which to keep a copy of the render (0 = the initialisation).
        generator: seeds initialisation and split sampling; None = ``manual_seed(0)``.

    Returns:
        ``FitResult`` with the fitted (detached) ``Gaussians2D``.
    """
    fit = ImageFit(
        image, num_gaussians, steps, lr=lr, means_lr_final_ratio=means_lr_final_ratio,
        densify=densify, mode=mode, loss=loss, ssim_weight=ssim_weight, init=init,
        generator=generator, tile=tile,
    )  # fmt: skip
    return run_fit(fit, eval_every, render_steps, progress)


def fit_3d(
    data: SceneData,
    steps: int = 3000,
    *,
    sh_degree: int = 0,
    lr: dict[str, float] | None = None,
    means_lr_final_ratio: float = 0.01,
    densify: DensifyConfig | None = None,
    loss: str = "l1",
    ssim_weight: float = 0.2,
    init: str = "points",
    eval_every: int = 500,
    render_steps: Sequence[int] = (),
    generator: torch.Generator | None = None,
    progress: bool = False,
    tile: int = 8,
) -> FitResult:
    """Fit 3D Gaussians to posed images, starting from the sparse points (3DGS, Kerbl et al. 2023).

    Args:
        data: training cameras/images, held-out cameras/images, points and background.
        steps: Adam steps; each renders one training view, in a shuffled order per epoch.
        sh_degree: 0 (one colour per Gaussian) or 1 (colour varies linearly with view direction).
        lr: per-parameter rates, defaults ``LR_3D``; the means' rate is multiplied by the scene
            extent (the points' largest distance from their centroid).
        densify: clone/split/prune settings, None = fixed set. ``grad_threshold`` is on the mean
            gradient w.r.t. the projected means in pixels; ``scale_threshold`` in world units.
        loss, ssim_weight: kind and λ of ``image_loss`` (3DGS: L1 and 0.2).
        init: ``"points"`` (one Gaussian per sparse point, 3DGS) or ``"random"`` (as many,
            uniform in the points' bounding cube, random colours).
        eval_every: measure mean PSNR/SSIM over the held-out views every this many steps.
        render_steps: steps at which to keep the render of the first held-out view.
        generator: seeds the view order and split sampling; None = ``manual_seed(0)``.

    Returns:
        ``FitResult`` with the fitted (detached) ``Gaussians3D``; ``psnr``/``ssim`` are held-out.
    """
    fit = SceneFit(
        data, steps, sh_degree=sh_degree, lr=lr, means_lr_final_ratio=means_lr_final_ratio,
        densify=densify, loss=loss, ssim_weight=ssim_weight, init=init, generator=generator,
        tile=tile,
    )  # fmt: skip
    return run_fit(fit, eval_every, render_steps, progress)
