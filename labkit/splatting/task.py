"""P50's task: fit one image with 2D Gaussians, or a small 3D scene with 3D ones, as a lab run.

``build(cfg)`` makes the target and the fit (:class:`labkit.splatting.fit.ImageFit` or
``SceneFit``); ``run(cfg, run_dir, ...)`` seeds, builds and drives the fit's ``train_step`` with
:func:`labkit.splatting.loop.run_fit`, the loop behind the notebook's ``fit_2d`` / ``fit_3d``
too, here with the lab's plumbing switched on: ``metrics.jsonl`` and TensorBoard (``train/*``
every ``trainer.log_every`` steps; ``eval/*`` and the image ``render/target|render`` at step 0,
every ``trainer.eval_every`` steps and at the end), checkpoints every ``trainer.ckpt_every``
steps and at the end (``labkit.splatting.checkpoints``: ``--resume`` continues bitwise
identically on the CPU), Ctrl-C / SIGTERM finish the step, save and return (the CLI exits 130),
and a non-finite loss, metric or Gaussian raises ``TrainingDiverged`` with no checkpoint of it.

The CLI (``python -m labkit.train p50_splat2d``), notebooks/50_gaussian_splatting_tiny.py and
``python -m labkit.done p50`` (``labkit.splatting.done``) call these.
"""

from __future__ import annotations

from pathlib import Path

import torch

from labkit.splatting.checkpoints import resume_from_checkpoint, start_from_checkpoint
from labkit.splatting.config import with_defaults
from labkit.splatting.densify import DensifyConfig
from labkit.splatting.fit import LR_2D, LR_3D, Fit, ImageFit, SceneFit
from labkit.splatting.images import load_image
from labkit.splatting.loop import run_fit
from labkit.splatting.scene import make_scene_data
from labkit.utils.checkpoint import Checkpoint
from labkit.utils.device import get_device
from labkit.utils.runs import RunResult, checkpoint_resume_point
from labkit.utils.seed import set_seed
from labkit.utils.threads import torch_threads


def check(cfg: dict) -> dict:
    """``cfg`` laid over the shipped config of its ``kind`` (p50_splat2d / p50_splat3d) and
    checked against that kind's schema (``labkit.splatting.config``); ``ConfigError`` if not."""
    return with_defaults(cfg)


# ---------------------------------------------------------------------------------------------
# Build


def densify_config(cfg: dict) -> DensifyConfig | None:
    """The ``densify`` section as a :class:`DensifyConfig`, or None when it is off."""
    section = dict(cfg["densify"])
    return DensifyConfig(**section) if section.pop("enabled") else None


def build(cfg: dict, device: torch.device | None = None) -> Fit:
    """A fresh fit of a checked P50 config, holding its target (the image, or the scene's views).

    The target, and with it the Gaussians and every render, lives on ``device`` (None: the
    config's ``device``, resolved by :func:`labkit.utils.device.get_device`). The generator
    (initialisation, split sampling, 3D view order) is seeded with ``cfg["seed"]`` and stays on
    the CPU whatever the device: a seed draws the same numbers on every device, and a checkpoint
    resumes on another one.
    """
    device = device or get_device(cfg["device"])
    generator = torch.Generator(device="cpu").manual_seed(cfg["seed"])
    optim, model, data, loss = cfg["optim"], cfg["model"], cfg["data"], cfg["loss"]
    common = dict(
        means_lr_final_ratio=optim["means_lr_final"] if optim["scheduler"] != "none" else 1.0,
        densify=densify_config(cfg),
        loss=loss["kind"],
        ssim_weight=loss["ssim_weight"],
        init=model["init"],
        generator=generator,
        tile=model["tile"],
    )
    steps = cfg["trainer"]["max_steps"]
    if cfg["kind"] == "image2d":
        image = load_image(data["image"], data["size"]).to(device)  # [S, S, 3]
        lr = {name: rate * optim["lr"] for name, rate in LR_2D.items()}
        return ImageFit(image, model["num_gaussians"], steps, lr=lr, mode=model["mode"], **common)
    scene = make_scene_data(  # ray cast on the CPU, once; then moved to the device
        size=data["size"],
        num_train=data["num_train"],
        num_test=data["num_test"],
        num_points=data["num_points"],
        seed=cfg["seed"],
        supersample=data["supersample"],
    ).to(device)
    lr = {name: rate * optim["lr"] for name, rate in LR_3D.items()}
    return SceneFit(scene, steps, sh_degree=model["sh_degree"], lr=lr, **common)


# ---------------------------------------------------------------------------------------------
# Run


def run(
    cfg: dict,
    run_dir: str | Path | None = None,
    device: torch.device | None = None,
    *,
    resume_from: str | Path | Checkpoint | None = None,
    init_from: str | Path | Checkpoint | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> RunResult:
    """Check, seed, build and fit ``cfg`` (a partial config is laid over its kind's YAML).

    Args:
        run_dir: folder for metrics.jsonl, TensorBoard events and checkpoints/ (``None``: nothing written).
        device: where the fit runs (None: the config's ``device``, resolved here); the CLI
            passes the device it resolved.
        resume_from: a checkpoint of this run (file, run folder or :class:`Checkpoint`); the fit
            continues bitwise identically.
        init_from: a checkpoint whose Gaussians start a new fit (Adam, step, generator fresh).
        stop_after: stop after this many steps as if interrupted (the means' learning-rate
            decay still spans ``trainer.max_steps``): used to check exact resume.

    Returns:
        ``summary`` (``step``, ``stopped_by``, ``kind``, the last ``eval/*``, ``wall_time_s``,
        ``cpu_time_s``), ``details`` (``losses`` of the steps run in this call,
        ``eval_history``, ``last_checkpoint``, and ``result``: the whole
        :class:`labkit.splatting.loop.FitResult`) and ``setup`` (the :class:`Fit`).

    Raises:
        ConfigError, CheckpointError, DeviceError (a device that is not there), TrainingDiverged.
    """
    cfg = check(cfg)
    device = device or get_device(cfg["device"])
    trainer = cfg["trainer"]
    set_seed(cfg["seed"], deterministic=cfg["deterministic"])
    with torch_threads(cfg["torch_threads"]):
        fit = build(cfg, device)
        if init_from is not None:  # a warm start: the Gaussians only
            start_from_checkpoint(fit, init_from, cfg["kind"])
        run_state = None
        if resume_from is not None:
            run_state = resume_from_checkpoint(fit, resume_from, cfg["kind"])
        result = run_fit(
            fit, trainer["eval_every"], progress=progress, stop_at=stop_after,
            eval_at_start=True, log_every=trainer["log_every"], run_dir=run_dir,
            ckpt_every=trainer["ckpt_every"], config=cfg, log_images=cfg["eval"]["log_images"],
            run_state=run_state,
        )  # fmt: skip
    history = result.eval_history
    last = {k: v for k, v in history[-1].items() if k != "step"} if history else {}
    summary = {
        "step": fit.step,
        "stopped_by": result.stopped_by,
        "kind": cfg["kind"],
        **last,
        "wall_time_s": result.seconds,
        "cpu_time_s": result.cpu_seconds,
    }
    details = {
        "losses": result.loss,
        "eval_history": history,
        "last_checkpoint": result.last_checkpoint,
        "result": result,
    }
    return RunResult(summary, details, fit)


# Checkpoints are checkpoints/step_<fit step>.pt, and metrics rows are logged at fit steps.
resume_point = checkpoint_resume_point
