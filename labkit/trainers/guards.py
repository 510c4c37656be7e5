"""What keeps every training loop honest: stop cleanly on a signal, never save or report NaN.

Used by the supervised trainer and by the RL loops alike, so that Ctrl-C, SIGTERM and a
diverging run behave the same everywhere: finish the step, save, exit 130 on a signal; stop with
one message naming the step, and write no checkpoint, when numbers stop being finite.
"""

from __future__ import annotations

import math
import signal
import threading
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn


class TrainingDiverged(RuntimeError):
    """The loss, a metric or the weights became NaN or infinite; no checkpoint is written for it."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM outside a training loop (setup, evaluation, selection, a judge):
    ``signal`` names it. A ``KeyboardInterrupt``, so code that is not the CLI stops as usual."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal = signal_name


class _OnSignal(ABC):
    """While active, ``self._handle`` answers Ctrl-C (SIGINT) and SIGTERM; the handlers that were
    there before come back at the end. Handlers only work in the main thread: elsewhere it is a
    no-op."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    @abstractmethod
    def _handle(self, signum: int, _frame: Any) -> None:
        """What a signal does: each subclass answers it its own way."""

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class InterruptOnSignal(_OnSignal):
    """While active, Ctrl-C (SIGINT) and SIGTERM raise :class:`RunInterrupted` wherever the
    program is: the CLI's handler around the whole of a phase's ``run``. A training loop's
    :class:`StopOnSignal` takes over inside the loop and hands back to it at the end."""

    def _handle(self, signum: int, _frame: Any) -> None:
        raise RunInterrupted(signal.Signals(signum).name)


class StopOnSignal(_OnSignal):
    """While active, Ctrl-C (SIGINT) and SIGTERM set a flag instead of killing the loop mid-step;
    the loop then finishes the step, writes a checkpoint and returns (the CLI exits 130)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: str | None = None

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received = signal.Signals(signum).name


def check_finite_weights(step: int, *modules: nn.Module | None) -> None:
    """Raise :class:`TrainingDiverged` if any parameter or buffer of ``modules`` is not finite.

    Called before every checkpoint: the loss check sees the loss computed *before* an update,
    so an update that blew the weights up would otherwise be saved.
    """
    for module in modules:
        if module is not None:
            check_finite_tensors(step, dict([*module.named_parameters(), *module.named_buffers()]))


def check_finite_tensors(
    step: int,
    tensors: dict[str, torch.Tensor],
    advice: str = "Lower the learning rate (optim.lr) or set trainer.grad_clip",
) -> None:
    """:func:`check_finite_weights` for named tensors that are no module's (e.g. P50's Gaussians);
    ``advice`` is the sentence that says what to change."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingDiverged(
                f"The weights became non-finite at step {step} ({name} holds NaN or Inf); "
                f"no checkpoint was written for that step. {advice}; the last checkpoint on "
                f"disk is from before."
            )


def check_finite_metrics(
    step: int,
    metrics: dict[str, float],
    advice: str = "Lower the learning rate (optim.lr), set trainer.grad_clip, or debug on a "
    "fixed batch with trainer.overfit=32",
) -> None:
    """Raise :class:`TrainingDiverged` if a reported number is NaN or infinite; ``advice`` is the
    sentence that says what to change."""
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k} = {v}" for k, v in bad.items())
        raise TrainingDiverged(
            f"{shown} at step {step}: a run never reports success with non-finite numbers. "
            f"{advice}."
        )
