"""Adaptive density control: clone, split and prune Gaussians during a fit (3DGS sec. 5.2).

Every ``every`` steps between ``start`` and ``stop``:

1. Average, per Gaussian, the norm of the loss gradient with respect to its *image-space* mean
   over the steps (views) in which it was drawn. A large average means the Gaussian keeps being
   pulled in different directions: the region it covers is not reconstructed well.
2. Where that average is at least ``grad_threshold``:
   * small Gaussians (largest scale ``<= scale_threshold``) are **cloned**, an identical copy
     (under-reconstruction: a detail is missing, add material);
   * large ones are **split** into two children at positions drawn from the parent Gaussian, with
     scales divided by 1.6 (over-reconstruction: one blob covers detail it cannot represent).
3. Gaussians with opacity below ``min_opacity`` are **pruned** (they contribute almost nothing).

The number of Gaussians never exceeds ``max_gaussians``: when the candidates would exceed it, the
ones with the largest gradients go first. (3DGS has no cap; on a CPU the cap is the budget.)

The optimiser is Adam, whose per-parameter moments must follow the Gaussians: kept Gaussians
keep their moments, new ones start at zero (3DGS's ``cat_tensors_to_optimizer`` and
``_prune_optimizer``). ``replace_in_adam`` does that surgery.

With the order-free "sum" rasteriser a copy would double the colour a region receives, so with
``conserve_sum=True`` the clones share the parent's opacity (each gets ``o / 2``) and the split
children keep the parent's total weight ``o · s_x s_y`` (each gets ``o · 1.6² / 2``, at most 0.99).

Explained in notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from labkit.trainers.guards import TrainingDiverged

__all__ = ["DensifyConfig", "GradientStats", "densify_and_prune", "replace_in_adam"]

SPLIT_SCALE = 1.6  # 3DGS: children get scale / (0.8 · 2)


@dataclass
class DensifyConfig:
    """When and how to densify. Thresholds are in the units of the fit (see ``fit_2d``/``fit_3d``).

    ``grad_threshold``: average image-space positional gradient norm that triggers clone/split.
    ``scale_threshold``: largest scale separating "small" (clone) from "large" (split).
    """

    start: int = 100
    stop: int = 1000
    every: int = 100
    grad_threshold: float = 2e-4
    scale_threshold: float = 1.0
    min_opacity: float = 0.005
    max_gaussians: int = 2000
    conserve_sum: bool = False

    def due(self, step: int) -> bool:
        """True after step ``step`` (1-based) if densification runs then."""
        return self.start <= step <= self.stop and step % self.every == 0


class GradientStats:
    """Running sum of ``‖∂L/∂μ'_i‖`` and of the number of views in which Gaussian i was drawn."""

    def __init__(self, num: int, device: torch.device | str | None = None) -> None:
        self.grad_sum = torch.zeros(num, device=device)  # [N], on the Gaussians' device
        self.count = torch.zeros(num, device=device)

    def add(self, mean2d_grad: Tensor, ids: Tensor | None = None) -> None:
        """``mean2d_grad [V, 2]``: gradient of the image-space means of Gaussians ``ids [V]``
        (all N when None; ``ids`` are distinct). Gaussians with an exactly zero gradient were
        not drawn and are not counted: they add 0 to both sums.
        """
        norms = mean2d_grad.detach().norm(dim=-1).float()  # [V]
        ids = torch.arange(len(norms), device=norms.device) if ids is None else ids
        drawn = norms > 0
        self.grad_sum.index_add_(0, ids, torch.where(drawn, norms, 0.0))
        self.count.index_add_(0, ids, drawn.to(self.count.dtype))

    def average(self) -> Tensor:
        return self.grad_sum / self.count.clamp(min=1)


def replace_in_adam(
    optimizer: torch.optim.Adam, new_tensors: dict[str, Tensor], keep: Tensor, num_added: int
) -> None:
    """Point each Adam group at its new tensor; moments of kept rows stay, added rows start at 0.

    Args:
        optimizer: Adam with one tensor per group and ``group["name"]`` the tensor's field name.
        new_tensors: name → new leaf tensor ``cat([old[keep], added])``.
        keep: ``[N_old]`` bool rows of the old tensors that survive, in order.
        num_added: rows appended after them.
    """
    for group in optimizer.param_groups:
        old, new = group["params"][0], new_tensors[group["name"]]
        state = optimizer.state.pop(old, None)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                moment = state[key][keep]
                state[key] = torch.cat([moment, moment.new_zeros(num_added, *moment.shape[1:])])
            optimizer.state[new] = state
        group["params"] = [new]


def densify_and_prune(
    gaussians,
    optimizer: torch.optim.Adam,
    stats: GradientStats,
    config: DensifyConfig,
    generator: torch.Generator | None = None,
):
    """One round of clone / split / prune. Returns the new parameter set (fresh leaf tensors).

    Args:
        gaussians: ``Gaussians2D`` or ``Gaussians3D`` whose tensors are the optimiser's.
        stats: gradient statistics since the last round.
    """
    with torch.no_grad():
        num = len(gaussians)
        grad = stats.average()
        opacity = gaussians.opacities
        prune = opacity < config.min_opacity
        candidates = (grad >= config.grad_threshold) & ~prune
        is_large = gaussians.scales.max(dim=1).values > config.scale_threshold

        # Respect the budget: each clone or split adds one Gaussian; prunes free room first.
        budget = max(config.max_gaussians - (num - int(prune.sum())), 0)
        if int(candidates.sum()) > budget:
            ranked = torch.where(candidates, grad, torch.full_like(grad, -1.0))
            chosen = torch.zeros_like(candidates)
            chosen[ranked.topk(budget).indices] = True
            candidates = candidates & chosen
        clone, split = candidates & ~is_large, candidates & is_large

        tensors = {k: v.detach().clone() for k, v in gaussians.tensors().items()}
        logits = tensors["opacity_logits"]
        if config.conserve_sum:
            logits[clone] = _logit(opacity[clone] / 2)
        cloned = {k: v[clone] for k, v in tensors.items()}
        children = _split_children(gaussians, tensors, split, generator, config.conserve_sum)

        keep = ~prune & ~split  # split parents are replaced by their children
        if int(keep.sum()) + int(clone.sum()) + 2 * int(split.sum()) == 0:
            raise TrainingDiverged(
                f"Densification would prune all {num} Gaussians: every opacity is below "
                f"densify.min_opacity={config.min_opacity:g} (the largest is "
                f"{float(opacity.max()):.3g}), and an empty set renders only the background; "
                f"the last checkpoint on disk is from before. Lower densify.min_opacity "
                f"(default 0.005)"
            )
        new = {
            k: torch.cat([v[keep], cloned[k], children[k]]).requires_grad_(True)
            for k, v in tensors.items()
        }
    replace_in_adam(optimizer, new, keep, int(clone.sum()) + 2 * int(split.sum()))
    return gaussians.replace(**new)


def _split_children(gaussians, tensors: dict[str, Tensor], split: Tensor, generator, conserve_sum):
    """Two children per split Gaussian: means ``μ + R (s ⊙ ε)``, ``ε ~ N(0, I)``; scales / 1.6."""
    scales = gaussians.scales[split].repeat(2, 1)  # [2S, d]
    rotations = gaussians.rotations()[split].repeat(2, 1, 1)  # [2S, d, d]
    # drawn where the generator lives (the task's is on the CPU: one seed, the same draws on any
    # device), then moved to the Gaussians
    draw_on = generator.device if generator is not None else scales.device
    eps = torch.randn(scales.shape, generator=generator, device=draw_on).to(scales.device)
    offsets = (rotations @ (scales * eps)[..., None]).squeeze(-1)  # sample of N(0, Σ)
    children = {k: v[split].repeat(2, *([1] * (v.ndim - 1))) for k, v in tensors.items()}
    children["means"] = children["means"] + offsets
    children["log_scales"] = children["log_scales"] - math.log(SPLIT_SCALE)
    if conserve_sum:  # two children of area / 1.6^d each keep the parent's total weight
        d = scales.shape[1]
        o = gaussians.opacities[split].repeat(2) * SPLIT_SCALE**d / 2
        children["opacity_logits"] = _logit(o.clamp(max=0.99))
    return children


def _logit(p: Tensor) -> Tensor:
    return torch.log(p / (1 - p))
