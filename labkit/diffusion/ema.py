"""Exponential moving average (EMA) of a model's weights, the weights diffusion models sample with.

``θ_ema ← d · θ_ema + (1 - d) · θ`` after every optimizer step. The average of the last ~1/(1-d)
iterates is much smoother than any single one, and for diffusion it matters: samples from the raw
weights of a short run are visibly worse than from the EMA weights (Ho et al. 2020 use d = 0.9999;
Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative Models", §3.5 explain
why).

With d = 0.9999 the first thousands of steps would average in the random initialisation, so the
decay is warmed up: ``d_t = min(d, (1 + t) / (10 + t))`` (as in TensorFlow's
``ExponentialMovingAverage(num_updates=...)``), which is 0.1 at t = 0 and reaches 0.999 at
t ≈ 9,000.

Buffers (BatchNorm statistics, if any) are copied, not averaged: they are not trained by the
optimizer. Integer tensors are copied as well.

Explained in notebooks/20_diffusion_mini.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """Shadow copies of a model's parameters and buffers.

    Args:
        model: the trained model; its current weights initialise the shadow.
        decay: the largest decay d in ``[0, 1)``.
        warmup: use ``d_t = min(d, (1 + t) / (10 + t))`` instead of d.

    Usage::

        ema = EMA(model, decay=0.999)
        ...                                   # after each optimizer.step():
        ema.update(model, step)
        with ema.swapped_in(model):           # sample / evaluate with the EMA weights
            images = ddpm_sample(model, ...)
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {
            name: tensor.detach().clone() for name, tensor in self._tensors(model).items()
        }

    @staticmethod
    def _tensors(model: nn.Module) -> dict[str, Tensor]:
        """Parameters and buffers by name (the keys of ``model.state_dict()``, persistent or not)."""
        return {**dict(model.named_parameters()), **dict(model.named_buffers())}

    def decay_at(self, step: int) -> float:
        """The decay used at optimizer step ``step``: ``min(d, (1 + step) / (10 + step))``."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """``θ_ema ← d_t θ_ema + (1 - d_t) θ`` for float parameters; buffers are copied.

        Args:
            model: the model just stepped by the optimizer (same architecture as at creation).
            step: the optimizer step count t for the warm-up; None counts this object's updates.
        """
        d = self.decay_at(self.num_updates if step is None else step)
        params = dict(model.named_parameters())
        for name, tensor in self._tensors(model).items():
            shadow = self.shadow[name]
            if name in params and shadow.is_floating_point():
                # lerp: shadow + (1 - d)(θ - shadow) = d · shadow + (1 - d) · θ
                shadow.lerp_(tensor.detach().to(shadow.dtype), 1.0 - d)
            else:
                shadow.copy_(tensor)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters and buffers with the EMA ones (e.g. to export them)."""
        for name, tensor in self._tensors(model).items():
            tensor.copy_(self.shadow[name])

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block, ``model`` holds the EMA weights; afterwards its own weights are back,
        even if the block raised. Training must not step the model inside the block."""
        backup = {name: t.detach().clone() for name, t in self._tensors(model).items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, tensor in self._tensors(model).items():
                    tensor.copy_(backup[name])

    def to(self, device: torch.device | str) -> EMA:
        """Move the shadow weights (e.g. keep them on the GPU with the model)."""
        self.shadow = {name: t.to(device) for name, t in self.shadow.items()}
        return self

    # ------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and tensors only, so a checkpoint stays loadable with ``weights_only``."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {name: t.clone() for name, t in self.shadow.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the shadow tensors keep their current device."""
        missing = self.shadow.keys() - state["shadow"].keys()
        unexpected = state["shadow"].keys() - self.shadow.keys()
        if missing or unexpected:
            raise KeyError(
                f"EMA state does not match this model: missing {sorted(missing)}, unexpected "
                f"{sorted(unexpected)}; was it saved from a different architecture?"
            )
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        with torch.no_grad():
            for name, tensor in state["shadow"].items():
                self.shadow[name].copy_(tensor)
