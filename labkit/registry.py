"""The one registry: phase name -> the phase package's task module.

A config names its phase (``phase: p00``); ``python -m labkit.train`` runs that module's
``run(cfg, run_dir, device, resume_from=..., progress=...) -> RunResult`` and
``python -m labkit.done PHASE`` runs its ``DONE_CHECKS``. Adding a phase: a package with a
``task`` module, one line here, a config in ``labkit/configs/``, a notebook, its tests.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PHASES: dict[str, str] = {
    "p00": "labkit.warmup.task",  # MNIST warm-up, the anatomy of a training loop
    "p10": "labkit.detection.task",  # tiny one-stage detector
    "p20": "labkit.diffusion.task",  # mini DDPM: schedules, U-Net, EMA, DDIM, guidance
    "p30": "labkit.rl.task",  # CartPole: DQN and REINFORCE with baseline
    "p40": "labkit.active.task",  # active learning: which frames to label (builds on p10)
    "p50": "labkit.splatting.task",  # tiny Gaussian splatting: an image in 2D, a scene in 3D
}


def task_module(phase: str) -> ModuleType:
    """The task module of ``phase``; an unknown phase raises ``KeyError`` naming the known ones."""
    if phase not in PHASES:
        raise KeyError(f"Unknown phase '{phase}'; known phases: {', '.join(PHASES)}.")
    return importlib.import_module(PHASES[phase])
