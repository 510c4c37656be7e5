"""What every training loop repeats, written once: signals, metrics, progress bar, cadence, guards.

The supervised trainer, both RL loops, P50's fit and P40's rounds all read the same way: the
algorithm is a short top-down loop in the phase, and the plumbing around it is one object::

    with LoopPlumbing(run_dir, total=max_steps, initial=step, desc="dqn", progress=progress) as loop:
        while step < max_steps and not loop.stopping:
            ...                                          # ALGO: one step of the method
            before, step = step, step + n
            loop.advance(n, loss=f"{loss:.3f}")          # PLUMBING from here on
            if due(before, step, log_every):
                loop.metrics.log(step, row)
            if due(before, step, ckpt_every) and loop.once("checkpoint", step):
                save(...)
        if loop.stopping:                                # Ctrl-C / SIGTERM: save, then return
            ...

``loop.stopping`` is the name of the signal received (``"SIGINT"``, ``"SIGTERM"``) or None:
while the block runs, a signal only sets it, so the loop finishes its step and saves before it
returns (the CLI then exits 130). Outside the block the CLI's own handler applies again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labkit.trainers.guards import StopOnSignal
from labkit.utils.logging import MetricsLogger
from labkit.utils.progress import progress_bar


def crossings(before: int, now: int, every: int) -> int:
    """How many multiples of ``every`` lie in (before, now]; 0 when ``every`` <= 0 (disabled).

    Counters may jump by several steps at once (vector envs), so ``now % every == 0`` would miss.
    """
    if every <= 0:
        return 0
    return now // every - before // every


def due(before: int, now: int, every: int) -> bool:
    """Whether a cadence of ``every`` (log, eval, checkpoint) fires between ``before`` and ``now``."""
    return crossings(before, now, every) > 0


class LoopPlumbing:
    """Signals, the run's :class:`MetricsLogger`, a tqdm bar and a "not twice for one step" guard.

    Args:
        run_dir: where ``metrics.jsonl`` and the TensorBoard events go (``None``: nothing is written).
        total, initial: the bar's length and start (a resumed loop starts where it stopped).
        desc: the bar's label; ``unit``: what one step counts (``"step"``, ``"env-step"``).
        progress: show the bar (False in tests and done checks).
        metrics: a logger that is already open (it is then left open at the end).
    """

    def __init__(
        self,
        run_dir: str | Path | None,
        *,
        total: int,
        initial: int = 0,
        desc: str = "train",
        unit: str = "step",
        progress: bool = True,
        tensorboard: bool = True,
        metrics: MetricsLogger | None = None,
    ) -> None:
        self._owns_metrics = metrics is None
        self.metrics = metrics or MetricsLogger(
            Path(run_dir) if run_dir is not None else None, tensorboard=tensorboard
        )
        self._signals = StopOnSignal()
        self._bar_args = dict(
            total=total, initial=initial, desc=desc, unit=unit, disable=not progress
        )
        self.bar: Any = None
        self._done: set[tuple[str, int]] = set()

    def __enter__(self) -> LoopPlumbing:
        self._signals.__enter__()
        self.bar = progress_bar(**self._bar_args)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.bar.close()
            if self._owns_metrics:
                self.metrics.close()
        finally:
            self._signals.__exit__(*exc)

    @property
    def stopping(self) -> str | None:
        """The signal received while the loop ran (``"SIGINT"``, ``"SIGTERM"``), or None."""
        return self._signals.received

    def advance(self, n: int = 1, **postfix: Any) -> None:
        """Move the bar by ``n`` steps and show ``postfix`` (e.g. ``loss="0.123"``) beside it."""
        self.bar.update(n)
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)

    def once(self, what: str, step: int) -> bool:
        """True the first time it is asked for ``(what, step)``: e.g. the end of a run and its
        cadence both want a checkpoint at the last step, and one file is enough."""
        if (what, step) in self._done:
            return False
        self._done.add((what, step))
        return True
