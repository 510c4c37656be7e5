"""How many intra-op threads torch uses, for one block of code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` intra-op torch threads, then restore the previous count.

    ``None`` leaves torch's setting alone: a library call should not change a process-wide
    knob as a side effect. Configs may ask for 1 (``torch_threads: 1``), e.g. because the
    matmuls of a 2-layer MLP on 4 numbers are too small for threads to pay off.
    """
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
