"""Optimizers and learning-rate schedules built from a config's ``optim`` section."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from labkit.utils.config import ConfigError


def build_optimizer(
    params: Iterable,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """``adamw`` (default) or ``sgd`` (with Nesterov momentum) over ``params`` (tensors or groups)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay
        )
    raise ConfigError(f"optim.name must be adamw or sgd; got '{name}'.")


class WarmupCosine:
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``min_ratio``.

    A small class rather than a lambda so that ``LambdaLR.state_dict()`` can save it.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, warmup_steps + 1)
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    warmup_steps: int = 0,
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``none`` → ``None``; ``cosine`` → warm-up + cosine (stepped once per optimizer step)."""
    if name in (None, "none"):
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, WarmupCosine(warmup_steps, total_steps, min_ratio)
        )
    raise ConfigError(f"optim.scheduler must be none or cosine; got '{name}'.")
