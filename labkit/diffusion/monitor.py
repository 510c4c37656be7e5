"""Watching a P20 run: the EMA after every step, sample grids and the judge's scores.

:class:`SampleMonitor` plugs into the shared trainer twice: as ``after_step`` (update the EMA
after each optimizer step; at each evaluation step, a grid of samples to TensorBoard,
``samples/ema``) and as ``eval_fn`` (the judge's scores of those samples and the held-out
denoising loss). Every evaluation samples through :meth:`labkit.diffusion.trained.Trained.sample`
from the same x_T (``sample.seed``) with the EMA weights, so the grids show one set of starting
points turning into digits over training. Evaluation draws from generators of its own and
restores the raw weights exactly: the loss curve is the same whatever ``trainer.eval_every``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from labkit.diffusion.config import NUM_CLASSES
from labkit.diffusion.data import to_zero_one
from labkit.diffusion.judge import judge_features, judge_scores
from labkit.diffusion.losses import diffusion_loss
from labkit.trainers.supervised_trainer import StepOutput
from labkit.utils.logging import MetricsLogger

if TYPE_CHECKING:  # typing only: trained.py imports this module (evaluate_checkpoint)
    from labkit.diffusion.trained import Trained


def sample_grid(samples: Tensor, nrow: int = NUM_CLASSES) -> Tensor:
    """``[N, C, H, W]`` in [-1, 1] → one ``[3, H', W']`` image in [0, 1], ``nrow`` per row."""
    from torchvision.utils import make_grid

    return make_grid(to_zero_one(samples), nrow=nrow, padding=2, pad_value=1.0)


class SampleMonitor:
    """The trainer's ``after_step`` (EMA update, sample grid) and ``eval_fn`` (scores).

    Args:
        trained: the run's model, EMA, schedule and config (updated in place as it trains).
        heldout: images ``[M, C, H, W]`` in [-1, 1] and labels ``[M]`` never trained on: the
            Fréchet reference (``eval.real_images`` of them) and the held-out loss
            (``eval.val_images``).
        max_steps: the run's last step (always evaluated); 0: only :meth:`evaluate` is used.
        judge: P00's classifier (:func:`labkit.diffusion.judge.load_judge`), or None.
    """

    def __init__(
        self,
        trained: Trained,
        heldout: TensorDataset,
        device: torch.device,
        max_steps: int,
        judge: nn.Module | None = None,
    ):
        cfg = trained.cfg
        self.trained, self.device, self.max_steps, self.judge = trained, device, max_steps, judge
        self.sample_cfg, self.eval_cfg = cfg["sample"], cfg["eval"]
        self.every = cfg["trainer"]["eval_every"]
        self.step = 0
        self.last: tuple[int, Tensor, float] | None = None  # (step, samples, seconds)
        self.labels: Tensor | None = None  # the labels the last samples were asked to be
        # Process CPU seconds spent drawing and judging samples: what a run's CPU time minus
        # these is the cost of training itself (labkit.diffusion.task.run reports both).
        self.sample_cpu_seconds, self.judge_cpu_seconds = 0.0, 0.0
        heldout_images, heldout_labels = heldout.tensors
        self.real_features = None
        if judge is not None:
            self.real_features = judge_features(
                judge, heldout_images[: self.eval_cfg["real_images"]]
            )
        n_val = min(self.eval_cfg["val_images"], len(heldout_labels))
        self.val_batch = (heldout_images[:n_val], heldout_labels[:n_val])

    def due(self, step: int) -> bool:
        return step == self.max_steps or bool(self.every and step % self.every == 0)

    def samples(self) -> Tensor:
        """This step's evaluation samples ``[N, C, H, W]`` (drawn once per step, EMA weights)."""
        if self.last is not None and self.last[0] == self.step:
            return self.last[1]
        start, cpu_start = time.perf_counter(), time.process_time()
        samples, self.labels = self.trained.sample(self.sample_cfg["num_samples"])
        self.last = (self.step, samples, time.perf_counter() - start)
        self.sample_cpu_seconds += time.process_time() - cpu_start
        return samples

    @property
    def eval_cpu_seconds(self) -> float:
        """Process CPU seconds of every evaluation so far (sampling, judging, held-out loss)."""
        return self.sample_cpu_seconds + self.judge_cpu_seconds

    def __call__(self, step: int, out: StepOutput, logger: MetricsLogger) -> None:
        """``after_step``: EMA update after every optimizer step; a sample grid when due."""
        self.trained.ema.update(self.trained.model)
        self.step = step
        rows = self.eval_cfg["log_images"]
        if rows and logger.writer is not None and self.due(step):
            samples = self.samples()
            logger.log_image("samples/ema", sample_grid(samples[: rows * NUM_CLASSES]), step)

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        """L_simple on held-out images with fixed t and ε (a generator of its own), no label drop."""
        images, labels = self.val_batch
        return diffusion_loss(
            model,
            self.trained.schedule,
            images.to(self.device),
            labels.to(self.device) if self.trained.conditional else None,
            prediction=self.trained.cfg["diffusion"]["prediction"],
            cond_drop_prob=0.0,
            generator=torch.Generator().manual_seed(0),
        ).item()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``eval_fn``: the judge's scores of this step's samples and the held-out loss (EMA).

        ``model``: the trainer's (unwrapped) model, the one ``self.trained`` holds.
        """
        if model is not self.trained.model:
            raise ValueError("SampleMonitor.evaluate: model is not the monitored run's U-Net")
        cpu_start, sampled = time.process_time(), self.sample_cpu_seconds
        samples = self.samples()
        scores: dict[str, float] = {"sample_seconds": self.last[2]}
        if len(self.val_batch[1]):
            with self.trained.ema.swapped_in(model):
                scores["val_loss"] = self.val_loss(model)
        if self.judge is not None:
            scores.update(
                judge_scores(
                    self.judge,
                    samples,
                    self.labels,
                    self.real_features,
                    self.eval_cfg["confident_threshold"],
                )
            )
        spent = time.process_time() - cpu_start
        self.judge_cpu_seconds += spent - (self.sample_cpu_seconds - sampled)
        return scores
