"""The one registry: what the lab knows about its phases, and the contract a phase meets.

Every table of phases in the lab (the CLI's, ``labkit.done``'s, the layout and exercise tests',
the README's "Adding a phase" list) reads :data:`PHASES`. A phase is a package under
``labkit/`` with two modules:

- ``task`` meets :class:`PhaseTask`: ``check(cfg)`` (the typed schema), ``build(cfg, device)``
  (everything a run needs) and ``run(cfg, run_dir, device, *, resume_from, init_from, progress,
  stop_after) -> RunResult``, plus ``resume_point(path)``, how the CLI finds where a run folder
  stopped (checkpoints, or the phase's own loop state);
- ``done`` meets :class:`PhaseChecks`: ``DONE_CHECKS``, the "done when" checks of
  ``python -m labkit.done PHASE``.

Adding a phase touches: the package (``task.py``, ``done.py``, its topic modules), one
:class:`Phase` entry here, its config(s) in ``labkit/configs/``, its notebook in ``notebooks/``,
and its tests (``tests/test_<package>_*.py`` and ``tests/wrong_answers/<package>.py`` for its
exercises). ``tests/test_layout.py`` checks every entry against this contract.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # typing only: the registry imports no phase and no torch at import time
    import torch

    from labkit.utils.checks import Check
    from labkit.utils.runs import ResumePoint, RunResult


@dataclass(frozen=True)
class Phase:
    """One phase of the lab: where it lives and how the lab may run it."""

    name: str  # "p10": what configs name (``phase: p10``) and ``labkit.done`` takes
    package: str  # "detection": labkit/<package>/ holds task.py and done.py
    title: str  # one line, for tables and help texts
    notebook: str  # "10_detection_tiny": notebooks/<notebook>.py
    configs: tuple[str, ...]  # the configs in labkit/configs/ that name this phase
    builds_on: tuple[str, ...] = ()  # phases whose packages this one may import
    distributed: bool = False  # runs under torchrun (the shared trainer shards and all-reduces)

    @property
    def task(self) -> ModuleType:
        """``labkit.<package>.task`` (imported on first use)."""
        return importlib.import_module(f"labkit.{self.package}.task")

    @property
    def done(self) -> ModuleType:
        """``labkit.<package>.done`` (imported on first use)."""
        return importlib.import_module(f"labkit.{self.package}.done")

    @property
    def notebook_path(self) -> Path:
        return Path(__file__).resolve().parents[1] / "notebooks" / f"{self.notebook}.py"


_ENTRIES = (
    Phase("p00", "warmup", "PyTorch warm-up: MNIST, the anatomy of a training loop",
          "00_pytorch_warmup", ("p00_mnist",), distributed=True),
    Phase("p10", "detection", "Tiny one-stage detector", "10_detection_tiny",
          ("p10_detection", "p10_voc"), distributed=True),
    Phase("p20", "diffusion", "Mini DDPM: schedules, U-Net, EMA, DDIM, guidance",
          "20_diffusion_mini", ("p20_ddpm", "p20_ddpm_gpu", "p20_cifar_gpu"),
          builds_on=("p00",), distributed=True),
    Phase("p30", "rl", "CartPole: DQN and REINFORCE with baseline", "30_rl_basics",
          ("p30_dqn", "p30_pg")),
    Phase("p40", "active", "Active learning: which frames to label", "40_active_learning_detection",
          ("p40_active",), builds_on=("p10",)),
    Phase("p50", "splatting", "Tiny Gaussian splatting: an image in 2D, a scene in 3D",
          "50_gaussian_splatting_tiny", ("p50_splat2d", "p50_splat3d")),
)  # fmt: skip
PHASES: dict[str, Phase] = {phase.name: phase for phase in _ENTRIES}


def get_phase(name: str) -> Phase:
    """The :class:`Phase` called ``name``; an unknown name raises ``KeyError`` naming the known."""
    if name not in PHASES:
        raise KeyError(f"Unknown phase '{name}'; known phases: {', '.join(PHASES)}.")
    return PHASES[name]


def task_module(name: str) -> ModuleType:
    """The task module of phase ``name`` (see :class:`PhaseTask`)."""
    return get_phase(name).task


def phase_of_package(package: str) -> Phase:
    """The phase whose code lives in ``labkit/<package>/``."""
    return next(p for p in PHASES.values() if p.package == package)


@runtime_checkable
class PhaseTask(Protocol):
    """What a phase's ``task`` module provides (the CLI, notebooks and done checks call these).

    ``run`` seeds, builds and trains; it writes only inside ``run_dir`` (``None``: nothing, or a
    temporary folder) and returns a ``RunResult`` whose ``summary`` holds ``step`` and
    ``stopped_by`` (``"max_steps"``, ``"solved"`` or a signal's name). ``resume_point(path)``
    reads a run folder or checkpoint file without writing anything: the saved config and how far
    the run got, or ``CheckpointError`` when there is nothing to continue.
    """

    def check(self, cfg: dict) -> dict: ...

    def build(self, cfg: dict, device: torch.device) -> Any: ...

    def run(
        self,
        cfg: dict,
        run_dir: str | Path | None = None,
        device: torch.device | None = None,
        *,
        resume_from: Any = None,
        init_from: Any = None,
        progress: bool = True,
        stop_after: int | None = None,
    ) -> RunResult: ...

    def resume_point(self, path: str | Path) -> ResumePoint: ...


@runtime_checkable
class PhaseChecks(Protocol):
    """What a phase's ``done`` module provides: the checks ``python -m labkit.done`` runs."""

    DONE_CHECKS: Sequence[Callable[[], Check]]
