"""Checkpoints of a P50 fit: everything that continues it bitwise, in one labkit checkpoint.

The Gaussians are the checkpoint's ``model`` (their count changes with densification) and Adam
its ``optimizer``; ``extra`` holds the rest of the fit's ``state_dict`` (step, generator,
densification statistics, the 3D view order) under ``fit``, the loop's own state (clocks, the
loss window) under ``run``, and the fit's ``kind``, so that a 2D checkpoint never resumes a 3D
fit. Written by ``labkit.splatting.loop.run_fit``; read by ``labkit.splatting.task.run``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from labkit.splatting.config import DIVERGED_ADVICE
from labkit.splatting.fit import Fit
from labkit.trainers.guards import check_finite_tensors
from labkit.utils.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    restore_states,
    save_checkpoint,
)
from labkit.utils.logging import get_logger
from labkit.utils.seed import set_rng_state

log = get_logger(__name__)


def save_fit_checkpoint(path: Path, fit: Fit, cfg: dict, run_state: dict) -> Path:
    """The Gaussians as ``model``, Adam as ``optimizer``, the rest of the fit and ``run_state``
    (clocks, loss window) in ``extra``; refused (``TrainingDiverged``) if a Gaussian is not finite.
    """
    check_finite_tensors(fit.step, fit.gaussians.tensors(), DIVERGED_ADVICE)
    state = fit.state_dict()
    rest = {k: v for k, v in state.items() if k not in ("gaussians", "optimizer")}
    return save_checkpoint(
        path, fit.gaussians, fit.optimizer, step=fit.step, config=cfg,
        keep_last=cfg["trainer"]["keep_last"], kind=cfg["kind"], fit=rest, run=dict(run_state),
    )  # fmt: skip


def read_fit_checkpoint(path: str | Path | Checkpoint, kind: str) -> Checkpoint:
    """A P50 checkpoint of ``kind`` (``image2d`` | ``scene3d``); ``CheckpointError`` if it is not."""
    ckpt = open_checkpoint(path)
    found = ckpt.payload.get("extra", {}).get("kind")
    if found is None or "fit" not in ckpt.payload["extra"]:
        raise CheckpointError(
            f"'{ckpt.path}' is a labkit checkpoint but not a P50 fit (no extra['fit']); resume "
            f"P50 runs from runs/p50_splat2d/... or runs/p50_splat3d/... checkpoints."
        )
    if found != kind:
        raise CheckpointError(
            f"'{ckpt.path}' holds a {found} fit, not {kind}; resume it with its own config "
            f"(python -m labkit.train --resume {ckpt.path})."
        )
    return ckpt


def start_from_checkpoint(fit: Fit, path: str | Path | Checkpoint, kind: str) -> None:
    """A warm start (``--init-from``): the checkpoint's Gaussians; Adam, step and generator stay
    fresh. ``CheckpointError`` names what does not fit."""
    ckpt = read_fit_checkpoint(path, kind)
    gaussians = SimpleNamespace(load_state_dict=fit.start_from)
    restore_states(ckpt.path, {"Gaussians": (gaussians, ckpt.payload["model"])})


def resume_from_checkpoint(fit: Fit, path: str | Path | Checkpoint, kind: str) -> dict:
    """Continue ``fit`` exactly where the checkpoint's stopped; returns its ``run`` state (the
    clocks and loss window that :func:`labkit.splatting.loop.run_fit` counts on from)."""
    ckpt = read_fit_checkpoint(path, kind)
    payload = ckpt.payload
    state = {"gaussians": payload["model"], "optimizer": payload["optimizer"]}
    restore_states(ckpt.path, {"fit": (fit, {**state, **payload["extra"]["fit"]})})
    set_rng_state(payload["rng"])  # the fit draws from its own generator; kept for symmetry
    log.info("resumed from %s at step %d", ckpt.path, fit.step)
    return dict(payload["extra"]["run"])
