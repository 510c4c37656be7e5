"""Console logging with timestamps, TensorBoard writers, and a metrics logger for runs.

Every run writes the same numbers three ways: the console (for now), ``metrics.jsonl`` (for
scripts and the ``done`` checks) and TensorBoard events (for curves). Keys are namespaced:
``train/loss``, ``eval/accuracy``, ``perf/samples_per_s``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

EVENTS_DIR = "."  # TensorBoard events go in the run folder itself: TensorBoard labels the run by it
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _AboveTheBar(logging.StreamHandler):
    """Writes each record through ``tqdm.write``: the progress bar is cleared, the line printed
    above it and the bar drawn again, so log lines never break into a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from labkit.utils.progress import write_above

            write_above(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def get_logger(name: str) -> logging.Logger:
    """A logger printing ``time level name: message`` to stderr (configured once for ``labkit``),
    above any tqdm progress bar."""
    root = logging.getLogger("labkit")
    if not root.handlers:
        handler = _AboveTheBar(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return logging.getLogger(name if name.startswith("labkit") else f"labkit.{name}")


def get_writer(log_dir: str | Path):
    """A TensorBoard ``SummaryWriter`` writing into ``log_dir`` (view with ``make tb``)."""
    from torch.utils.tensorboard import (
        SummaryWriter,  # imported lazily: tensorboard is slow to load
    )

    return SummaryWriter(log_dir=str(log_dir))


def write_hparams(run_dir: str | Path, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The run's flattened config (``optim.lr``, ``trainer.max_steps``, ...) and its final
    numbers into TensorBoard's HParams tab, in the run's own event folder, so that runs can be
    sorted and filtered by any key. Lists become text; non-numbers among ``metrics`` are left out.
    """
    from torch.utils.tensorboard.summary import hparams

    def plain(value: Any) -> Any:
        if isinstance(value, bool | int | float | str):
            return value
        return json.dumps(value) if value is not None else "none"

    flat: dict[str, Any] = {}

    def walk(node: dict, prefix: str = "") -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = plain(value)

    walk(config)
    numbers = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    writer = get_writer(Path(run_dir) / EVENTS_DIR)
    try:
        for summary in hparams(flat, numbers):
            writer.file_writer.add_summary(summary)
    finally:
        writer.close()


def json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities become ``None``: strict JSON has no such numbers."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


class MetricsLogger:
    """Append ``{"step": s, key: value, ...}`` lines to ``metrics.jsonl`` and mirror them to TensorBoard.

    With ``run_dir=None`` nothing is written (tests, notebooks that only want the numbers);
    ``history`` always keeps every logged row in memory.
    """

    def __init__(self, run_dir: str | Path | None, tensorboard: bool = True):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.history: list[dict[str, Any]] = []
        self._file = None
        self._writer = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
            if tensorboard:
                self._writer = get_writer(self.run_dir / EVENTS_DIR)

    @property
    def writer(self):
        """The TensorBoard writer (``None`` without a run folder), e.g. for ``add_image``."""
        return self._writer

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        if self._file is not None:
            self._file.write(json.dumps(json_safe(row)) + "\n")
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, value, step)

    def log_image(self, tag: str, image: Any, step: int) -> None:
        """An image ``[3, H, W]`` float in [0, 1] (or uint8) to TensorBoard (no-op without one)."""
        if self._writer is not None:
            self._writer.add_image(tag, image, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file (or of ``run_dir/metrics.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
