"""Running averages and throughput: the small counters every training loop keeps."""

from __future__ import annotations

import time


class AverageMeter:
    """Running mean of a value weighted by batch size: ``update(loss, n=batch_size)``."""

    def __init__(self, name: str = "value"):
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.sum = 0.0
        self.count = 0
        self.last = 0.0

    def update(self, value: float, n: int = 1) -> None:
        self.last = float(value)
        self.sum += float(value) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else float("nan")

    def __repr__(self) -> str:
        return f"{self.name}: {self.last:.4g} (avg {self.avg:.4g})"


class ThroughputMeter:
    """Samples per second, measured between calls of ``rate``."""

    def __init__(self) -> None:
        self._samples = 0
        self._window_start = time.perf_counter()

    def tick(self, samples: int) -> None:
        self._samples += samples

    def rate(self) -> float:
        """Samples per second since the last call of ``rate`` (then starts a new window)."""
        now = time.perf_counter()
        elapsed = max(now - self._window_start, 1e-9)
        value = self._samples / elapsed
        self._samples = 0
        self._window_start = now
        return value
