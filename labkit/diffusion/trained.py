"""A trained P20 model: what sampling needs, the one way to sample from it, and how it comes back
from a checkpoint.

:meth:`Trained.sample` is the config-driven sampler everyone uses: the run's evaluations
(:class:`labkit.diffusion.monitor.SampleMonitor`), :func:`evaluate_checkpoint` (the done checks,
``benchmarks/compare_samplers.py``) and the notebook. It reads the ``sample`` section (sampler,
DDIM steps and η, guidance scale, clipping, the seed of x_T) and calls the samplers of
:mod:`labkit.diffusion.sampling`, which hold the math. Explained in
notebooks/20_diffusion_mini.py (sections 5-8).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from labkit.diffusion.config import NUM_CLASSES, image_shape
from labkit.diffusion.ema import EMA
from labkit.diffusion.judge import load_judge
from labkit.diffusion.monitor import SampleMonitor
from labkit.diffusion.sampling import ddim_sample, ddpm_sample
from labkit.diffusion.schedule import NoiseSchedule
from labkit.diffusion.unet import UNet
from labkit.utils.checkpoint import Checkpoint, CheckpointError, load_checkpoint, open_checkpoint


def eval_labels(n: int, conditional: bool) -> Tensor | None:
    """``[n]`` labels ``0, 1, ..., 9, 0, 1, ...`` (every class equally often, a grid row per
    10), or None for an unconditional model."""
    return torch.arange(n) % NUM_CLASSES if conditional else None


@dataclass
class Trained:
    """What sampling needs from a run: the U-Net (raw weights), its EMA, the schedule, the config
    and the step. From :func:`load_trained` (a checkpoint) or ``DiffusionSetup.trained()``."""

    model: UNet
    ema: EMA
    schedule: NoiseSchedule
    cfg: dict
    step: int = 0

    @property
    def conditional(self) -> bool:
        return self.model.num_classes is not None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return image_shape(self.cfg)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        weights: str = "ema",
        generator: torch.Generator | None = None,
        callback: Any = None,
        schedule: NoiseSchedule | None = None,
        chunk: int = 250,
        **changes: Any,
    ) -> tuple[Tensor, Tensor | None]:
        """``(samples [N, C, H, W] in [-1, 1], labels [N] or None)`` with the config's sampler.

        Args:
            num_samples: N; a conditional model gets the labels of :func:`eval_labels` and the
                config's guidance scale (an unconditional one no guidance).
            weights: ``"ema"`` (the averaged weights, swapped in for the call) or ``"raw"``.
            generator: the only randomness (default: seeded with ``sample.seed``, so every call
                starts from the same x_T).
            callback: the sampler's per-step callback (e.g. a ``StepRecorder``).
            schedule: the chain to run (default: the one trained), e.g. a truncated one.
            chunk: samples per sampler call (memory); the generator runs on across chunks.
            changes: override ``sample.*`` keys (``sampler``, ``steps``, ``eta``,
                ``guidance_scale``, ``clip_x0``, ``seed``), e.g. for a sweep.
        """
        known = set(self.cfg["sample"]) - {"num_samples"}
        if set(changes) - known:
            raise TypeError(
                f"Trained.sample: unknown sample.* keys {sorted(set(changes) - known)}; "
                f"it takes {sorted(known)}."
            )
        if weights not in ("ema", "raw"):
            raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
        s = {**self.cfg["sample"], **changes}
        schedule = schedule or self.schedule
        labels = eval_labels(num_samples, self.conditional)
        generator = generator or torch.Generator().manual_seed(s["seed"])
        device = schedule.betas.device
        common = dict(
            guidance_scale=s["guidance_scale"] if labels is not None else None,
            prediction=self.cfg["diffusion"]["prediction"],
            clip_x0=s["clip_x0"],
            generator=generator,
            device=device,
            callback=callback,
        )
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            with self.ema.swapped_in(self.model) if weights == "ema" else contextlib.nullcontext():
                for start in range(0, num_samples, chunk):
                    size = min(chunk, num_samples - start)
                    y = labels[start : start + size].to(device) if labels is not None else None
                    shape = (size, *self.image_shape)
                    if s["sampler"] == "ddpm":
                        x = ddpm_sample(self.model, schedule, shape, labels=y, **common)
                    else:
                        x = ddim_sample(
                            self.model, schedule, shape, num_steps=s["steps"], eta=s["eta"],
                            labels=y, **common,
                        )  # fmt: skip
                    out.append(x.cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(out), labels


def load_trained(
    checkpoint: str | Path | Checkpoint, device: torch.device | str = "cpu"
) -> Trained:
    """A run's U-Net, EMA weights and schedule from a checkpoint file or run folder (its newest
    checkpoint), without its data: for notebooks and :func:`evaluate_checkpoint`."""
    from labkit.diffusion import task  # not at the top: task imports this module (Trained)

    ckpt = open_checkpoint(checkpoint)
    cfg = task.check(ckpt.config or {})
    device = torch.device(device)
    model = task.build_model(cfg).to(device)
    load_checkpoint(ckpt, model, map_location=device)
    ema = EMA(model, cfg["ema"]["decay"], cfg["ema"]["warmup"])
    saved = (ckpt.payload["extra"].get("objects") or {}).get("ema")
    if saved is None:
        raise CheckpointError(f"Checkpoint '{ckpt.path}' holds no EMA weights.")
    ema.load_state_dict(saved)
    return Trained(model.eval(), ema, task.build_schedule(cfg).to(device), cfg, ckpt.step)


def evaluate_checkpoint(
    checkpoint: str | Path | Checkpoint, device: torch.device | str = "cpu", **sample_changes: Any
) -> dict[str, float]:
    """The run's own evaluation (judge scores, held-out loss) of a saved checkpoint's EMA
    weights; ``sample_changes`` override ``sample.*`` (e.g. ``guidance_scale=3.0``,
    ``num_samples=300``), checked against the schema like the run's config."""
    from labkit.diffusion import task  # not at the top: task imports this module (Trained)

    device = torch.device(device)
    trained = load_trained(checkpoint, device)
    cfg = trained.cfg = task.check(
        {**trained.cfg, "sample": {**trained.cfg["sample"], **sample_changes}}
    )
    _, heldout = task.build_datasets(cfg)
    judge = None
    if cfg["eval"]["judge"] == "mnist_cnn":
        judge, _ = load_judge(cfg["eval"], device, cfg["data"]["holdout"])
    monitor = SampleMonitor(trained, heldout, device, max_steps=0, judge=judge)
    monitor.step = trained.step
    with torch.no_grad():
        return monitor.evaluate(trained.model.eval())
