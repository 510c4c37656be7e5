"""Fitting Gaussians by gradient descent: one image with 2D Gaussians, a scene with 3D ones.

Both loops are the same few lines: render, compare with the target, backward, Adam step (one
learning rate per kind of parameter, as 3DGS), now and then densify and prune. The positional
learning rate decays exponentially, as in 3DGS: large moves early, fine placement late.

Loss (3DGS eq. 7): ``L = (1 - λ) L1 + λ (1 - SSIM)`` with λ = ``ssim_weight``; ``fit_2d`` uses
MSE by default instead of L1 (GaussianImage trains with L2, and PSNR is a function of MSE).

Fits are deterministic for a given generator seed: initialisation and split sampling draw from
it, and the rasterisers are deterministic on the CPU (sorts are stable, sums have a fixed order).

Explained in notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from labkit.splatting.densify import DensifyConfig, GradientStats, densify_and_prune
from labkit.splatting.gaussians import (
    Gaussians2D,
    Gaussians3D,
    gaussians_2d_from_image,
    gaussians_3d_from_points,
)
from labkit.splatting.metrics import psnr, ssim
from labkit.splatting.rasterise import render_gaussians_2d, render_gaussians_3d
from labkit.splatting.scene import SceneData

__all__ = [
    "FitResult",
    "LR_2D",
    "LR_3D",
    "fit_2d",
    "fit_3d",
    "evaluate_3d",
    "image_loss",
    "psnr",
    "ssim",
]

# Adam learning rates per parameter kind. 2D: means in pixels per step, tuned on 128x128 images.
# 3D: 3DGS's values (train.py defaults), but the position rate is 10x theirs (1.6e-4) since the
# fits here are ~10x shorter than their 30k steps; fit_3d multiplies it by the scene extent
# (3DGS's spatial_lr_scale), so it is in scene-size units.
LR_2D = {"means": 0.05, "log_scales": 0.02, "angles": 0.02, "colors": 0.01, "opacity_logits": 0.02}
LR_3D = {
    "means": 1.6e-3,
    "log_scales": 5e-3,
    "quats": 1e-3,
    "opacity_logits": 0.05,
    "sh_dc": 2.5e-3,
    "sh_rest": 2.5e-3 / 20,
}


@dataclass
class FitResult:
    """What a fit returns. ``eval_steps[k]`` is the step at which ``psnr[k]``, ``ssim[k]`` and
    ``num_gaussians[k]`` were measured (for ``fit_3d``: means over the held-out views);
    ``loss`` has one entry per step; ``renders`` maps chosen steps to ``[H, W, 3]`` images (the
    first held-out view for ``fit_3d``); ``seconds`` is the wall time of the loop and
    ``cpu_seconds`` its process CPU time (on a shared machine the fairer measure)."""

    gaussians: Gaussians2D | Gaussians3D
    eval_steps: list[int] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    num_gaussians: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    renders: dict[int, Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def image_loss(
    render: Tensor, target: Tensor, ssim_weight: float = 0.2, kind: str = "l1"
) -> Tensor:
    """``(1 - λ) · L_kind + λ · (1 - SSIM)`` between ``[H, W, 3]`` images; kind ``"l1"`` or ``"l2"``."""
    pixel = F.l1_loss(render, target) if kind == "l1" else F.mse_loss(render, target)
    if ssim_weight == 0:
        return pixel
    return (1 - ssim_weight) * pixel + ssim_weight * (1 - ssim(render, target))


def _adam(gaussians, lr: dict[str, float]) -> torch.optim.Adam:
    """One Adam group per parameter tensor, named after it (densification finds them by name)."""
    groups = [
        {"params": [t], "lr": lr[name], "name": name} for name, t in gaussians.tensors().items()
    ]
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15)  # 3DGS's eps: gradients here are tiny


def _decay_means_lr(
    optimizer: torch.optim.Adam, lr0: float, step: int, steps: int, ratio: float
) -> None:
    """Exponential decay ``lr0 · ratio^(step / steps)`` of the means' rate (3DGS get_expon_lr_func)."""
    for group in optimizer.param_groups:
        if group["name"] == "means":
            group["lr"] = lr0 * ratio ** (step / steps)


def _bar(steps: int, progress: bool):
    return tqdm(range(1, steps + 1), disable=not progress, leave=False)


# ---------------------------------------------------------------- 2D: one image


def fit_2d(
    image: Tensor,
    num_gaussians: int = 2000,
    steps: int = 1000,
    *,
    lr: dict[str, float] | None = None,
    means_lr_final_ratio: float = 0.05,
    densify: DensifyConfig | None = None,
    mode: str = "sum",
    loss: str = "l2",
    ssim_weight: float = 0.0,
    eval_every: int = 100,
    render_steps: Sequence[int] = (),
    generator: torch.Generator | None = None,
    progress: bool = False,
    tile: int = 8,
) -> FitResult:
    """Fit ``num_gaussians`` 2D Gaussians to one image (GaussianImage, Zhang et al. 2024).

    Args:
        image: ``[H, W, 3]`` target in ``[0, 1]``.
        num_gaussians: starting N (densification may grow it up to ``densify.max_gaussians``).
        steps: Adam steps; one full-image render each.
        lr: per-parameter learning rates, defaults ``LR_2D`` (means in pixels per step).
        means_lr_final_ratio: the means' rate decays to this fraction of its start.
        densify: clone/split/prune settings, None = fixed N. Thresholds are in pixels: the
            gradient of the loss w.r.t. the mean in pixels, and the scale σ in pixels.
        mode: ``"sum"`` (GaussianImage's order-free sum) or ``"alpha"`` (compositing in index order).
        loss, ssim_weight: see ``image_loss``.
        eval_every: measure PSNR/SSIM every this many steps (and at the last step).
        render_steps: steps at which to keep a copy of the render (0 = the initialisation).
        generator: seeds initialisation and split sampling; None = ``manual_seed(0)``.

    Returns:
        ``FitResult`` with the fitted (detached) ``Gaussians2D``.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] in [0, 1]; got {tuple(image.shape)}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    image = image.float()
    height, width = image.shape[:2]
    gaussians = gaussians_2d_from_image(image, num_gaussians, generator).requires_grad_()
    lr = {**LR_2D, **(lr or {})}
    optimizer = _adam(gaussians, lr)
    stats = GradientStats(len(gaussians))
    result = FitResult(gaussians)
    if 0 in render_steps:
        with torch.no_grad():
            result.renders[0] = render_gaussians_2d(gaussians, height, width, mode, tile).clamp(
                0, 1
            )

    start, cpu_start = time.perf_counter(), time.process_time()
    for step in _bar(steps, progress):
        _decay_means_lr(optimizer, lr["means"], step, steps, means_lr_final_ratio)
        rendered = render_gaussians_2d(gaussians, height, width, mode, tile)  # [H, W, 3]
        loss_value = image_loss(rendered, image, ssim_weight, loss)
        optimizer.zero_grad(set_to_none=True)
        loss_value.backward()
        optimizer.step()
        result.loss.append(loss_value.item())

        if densify is not None and step <= densify.stop:
            stats.add(gaussians.means.grad)  # the means are already image-space
            if densify.due(step):
                gaussians = densify_and_prune(gaussians, optimizer, stats, densify, generator)
                stats = GradientStats(len(gaussians))
        if step % eval_every == 0 or step == steps or step in render_steps:
            with torch.no_grad():
                shown = rendered.detach().clamp(0, 1)
                if step % eval_every == 0 or step == steps:
                    _record(result, step, shown, image, len(gaussians))
                if step in render_steps:
                    result.renders[step] = shown
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - cpu_start
    result.gaussians = gaussians.detach()
    return result


def _record(result: FitResult, step: int, rendered: Tensor, target: Tensor, num: int) -> None:
    result.eval_steps.append(step)
    result.psnr.append(psnr(rendered, target).item())
    result.ssim.append(ssim(rendered, target).item())
    result.num_gaussians.append(num)


# ---------------------------------------------------------------- 3D: a scene from posed images


@torch.no_grad()
def evaluate_3d(
    gaussians: Gaussians3D, cameras, images: Tensor, background: Tensor
) -> tuple[float, float, Tensor]:
    """Mean PSNR and SSIM over views. ``images [V, H, W, 3]``. Returns (psnr, ssim, renders [V, H, W, 3])."""
    renders = torch.stack(
        [render_gaussians_3d(gaussians, cam, background).image.clamp(0, 1) for cam in cameras]
    )
    p = sum(psnr(r, t).item() for r, t in zip(renders, images)) / len(cameras)
    s = sum(ssim(r, t).item() for r, t in zip(renders, images)) / len(cameras)
    return p, s, renders


def fit_3d(
    data: SceneData,
    steps: int = 3000,
    *,
    sh_degree: int = 0,
    lr: dict[str, float] | None = None,
    means_lr_final_ratio: float = 0.01,
    densify: DensifyConfig | None = None,
    ssim_weight: float = 0.2,
    eval_every: int = 500,
    render_steps: Sequence[int] = (),
    generator: torch.Generator | None = None,
    progress: bool = False,
    tile: int = 8,
) -> FitResult:
    """Fit 3D Gaussians to posed images, starting from the sparse points (3DGS, Kerbl et al. 2023).

    Args:
        data: training cameras/images, held-out cameras/images, points and background.
        steps: Adam steps; each renders one training view, in a shuffled order per epoch.
        sh_degree: 0 (one colour per Gaussian) or 1 (colour varies linearly with view direction).
        lr: per-parameter rates, defaults ``LR_3D``; the means' rate is multiplied by the scene
            extent (the points' largest distance from their centroid).
        densify: clone/split/prune settings, None = fixed set. ``grad_threshold`` is on the mean
            gradient w.r.t. the projected means in pixels; ``scale_threshold`` in world units.
        ssim_weight: λ of ``image_loss`` (3DGS: 0.2).
        eval_every: measure mean PSNR/SSIM over the held-out views every this many steps.
        render_steps: steps at which to keep the render of the first held-out view.
        generator: seeds the view order and split sampling; None = ``manual_seed(0)``.

    Returns:
        ``FitResult`` with the fitted (detached) ``Gaussians3D``; ``psnr``/``ssim`` are held-out.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    gaussians = gaussians_3d_from_points(data.points, data.colors, sh_degree).requires_grad_()
    extent = (data.points - data.points.mean(0)).norm(dim=-1).max().item()
    lr = {**LR_3D, **(lr or {})}
    lr["means"] = lr["means"] * extent
    optimizer = _adam(gaussians, lr)
    stats = GradientStats(len(gaussians))
    result = FitResult(gaussians)
    background = data.background
    order: list[int] = []

    start, cpu_start = time.perf_counter(), time.process_time()
    for step in _bar(steps, progress):
        _decay_means_lr(optimizer, lr["means"], step, steps, means_lr_final_ratio)
        if not order:  # a new epoch: every training view once, in a random order
            order = torch.randperm(len(data.train_cameras), generator=generator).tolist()
        view = order.pop()
        out = render_gaussians_3d(gaussians, data.train_cameras[view], background, tile=tile)
        loss_value = image_loss(out.image, data.train_images[view], ssim_weight, "l1")
        optimizer.zero_grad(set_to_none=True)
        loss_value.backward()
        optimizer.step()
        result.loss.append(loss_value.item())

        if densify is not None and step <= densify.stop:
            stats.add(out.means2d.grad, out.visible)
            if densify.due(step):
                gaussians = densify_and_prune(gaussians, optimizer, stats, densify, generator)
                stats = GradientStats(len(gaussians))
        if step % eval_every == 0 or step == steps:
            p, s, renders = evaluate_3d(gaussians, data.test_cameras, data.test_images, background)
            result.eval_steps.append(step)
            result.psnr.append(p)
            result.ssim.append(s)
            result.num_gaussians.append(len(gaussians))
        if step in render_steps:
            with torch.no_grad():
                result.renders[step] = render_gaussians_3d(
                    gaussians, data.test_cameras[0], background
                ).image.clamp(0, 1)
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - cpu_start
    result.gaussians = gaussians.detach()
    return result
