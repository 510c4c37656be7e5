"""Fitting Gaussians by gradient descent: one image with 2D Gaussians, a scene with 3D ones.

Both fits are the same few lines (``Fit.train_step``): render, compare with the target,
backward, Adam step (one learning rate per kind of parameter, as 3DGS), now and then densify and
prune. The positional learning rate decays exponentially, as in 3DGS: large moves early, fine
placement late. ``ImageFit`` and ``SceneFit`` say what is rendered and compared; everything a fit
changes as it runs (Gaussians, Adam moments, densification statistics, generator, step, the 3D
view order) is in the fit object and in its ``state_dict``, so a fit stopped after any step
continues bitwise identically. One loop drives ``train_step`` (``labkit.splatting.loop``): in
memory for the notebook's ``fit_2d`` / ``fit_3d``, with logging and checkpoints for the task.

Loss (3DGS eq. 7): ``L = (1 - λ) L1 + λ (1 - SSIM)`` with λ = ``ssim_weight``; the 2D fit uses
MSE by default instead of L1 (GaussianImage trains with L2, and PSNR is a function of MSE).

Fits are deterministic for a given generator seed: initialisation and split sampling draw from
it, and the rasterisers are deterministic on the CPU (sorts are stable, sums have a fixed order).
Evaluation draws nothing from it, so how often a fit is evaluated never changes the fit.

Explained in notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from labkit.splatting.densify import DensifyConfig, GradientStats, densify_and_prune
from labkit.splatting.gaussians import (
    Gaussians2D,
    Gaussians3D,
    gaussians_2d_from_image,
    gaussians_3d_from_points,
    random_gaussians_2d,
    random_gaussians_3d,
)
from labkit.splatting.metrics import psnr, ssim
from labkit.splatting.rasterise import render_gaussians_2d, render_gaussians_3d
from labkit.splatting.scene import SceneData

__all__ = [
    "LR_2D",
    "LR_3D",
    "Fit",
    "ImageFit",
    "SceneFit",
    "evaluate_3d",
    "image_loss",
    "scene_extent",
    "psnr",
    "ssim",
]

# Adam learning rates per parameter kind. 2D: means in pixels per step, tuned on 128x128 images.
# 3D: 3DGS's values (train.py defaults), but the position rate is 10x theirs (1.6e-4) since the
# fits here are ~10x shorter than their 30k steps; SceneFit multiplies it by the scene extent
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


def _default_generator() -> torch.Generator:
    """A fit's generator when none is given: on the CPU, whatever device the fit runs on, so a
    seed draws the same starting Gaussians (and splits, and view orders) everywhere; its few
    draws are moved to the fit's device."""
    return torch.Generator(device="cpu").manual_seed(0)


def _decay_means_lr(
    optimizer: torch.optim.Adam, lr0: float, step: int, steps: int, ratio: float
) -> None:
    """Exponential decay ``lr0 · ratio^(step / steps)`` of the means' rate (3DGS get_expon_lr_func)."""
    for group in optimizer.param_groups:
        if group["name"] == "means":
            group["lr"] = lr0 * ratio ** (step / steps)


# ---------------------------------------------------------------- a fit in progress


class Fit(ABC):
    """A fit in progress: Gaussians, their Adam, densification statistics, generator and step.

    Subclasses say what one step renders and compares (``loss``) and how a fit is measured
    (``evaluate``, ``preview``). ``train_step`` is the algorithm, written once for both.

    Args:
        gaussians: the starting set (made leaf tensors that require grad here).
        lr: Adam rate per tensor name (the means' rate is the start of its decay).
        steps: the length of the fit: the means' rate decays over it.
        means_lr_final_ratio: the means' rate reaches this fraction of its start at ``steps``
            (1.0: constant).
        densify: clone/split/prune settings; None = a fixed set.
        generator: the fit's only randomness (split sampling, 3D view order).
    """

    def __init__(
        self,
        gaussians: Gaussians2D | Gaussians3D,
        lr: dict[str, float],
        steps: int,
        means_lr_final_ratio: float,
        densify: DensifyConfig | None,
        generator: torch.Generator,
    ) -> None:
        self.gaussians = gaussians.requires_grad_()
        self.lr, self.steps, self.means_lr_final_ratio = dict(lr), steps, means_lr_final_ratio
        self.densify, self.generator = densify, generator
        self.optimizer = _adam(self.gaussians, self.lr)
        self.device = self.gaussians.means.device  # the target's: everything a step makes is here
        self.stats = GradientStats(len(self.gaussians), self.device)
        self.step = 0

    @abstractmethod
    def loss(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """This step's loss, the image-space means ``[V, 2]`` whose ``.grad`` feeds
        densification after backward, and the indices ``[V]`` of those Gaussians (None: all)."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """``{"psnr", "ssim", "num_gaussians"}`` of the current Gaussians."""

    @abstractmethod
    def preview(self) -> Tensor:
        """``[H, W, 3]`` render in [0, 1] to look at (the image; for 3D the first held-out view)."""

    @abstractmethod
    def preview_target(self) -> Tensor:
        """``[H, W, 3]`` what ``preview`` should look like."""

    def train_step(self) -> float:
        """One step of the algorithm; returns its loss (measured before the update)."""
        self.step += 1
        _decay_means_lr(
            self.optimizer, self.lr["means"], self.step, self.steps, self.means_lr_final_ratio
        )
        loss, means2d, ids = self.loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

        densify = self.densify
        if densify is not None and self.step <= densify.stop:
            self.stats.add(means2d.grad, ids)  # gradient of the loss w.r.t. image-space means
            # never after the last step: the new Gaussians would have no steps to settle in
            if densify.due(self.step) and self.step < self.steps:
                self.gaussians = densify_and_prune(
                    self.gaussians, self.optimizer, self.stats, densify, self.generator
                )
                self.stats = GradientStats(len(self.gaussians), self.device)
        return loss.item()  # a number for the loop to log and guard (on a GPU: a sync)

    # -------------------------------------------------------- state: continue a fit exactly

    def state_dict(self) -> dict[str, Any]:
        """Everything the next step depends on, as tensors and plain values (``weights_only``).

        ``gaussians`` (their count changes with densification), ``optimizer`` (Adam's moments
        and step per tensor, the groups' current rates), ``step``, ``generator`` (its state),
        ``grad_sum`` / ``grad_count`` (densification statistics since the last round).
        """
        return {
            "gaussians": self.gaussians.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "generator": self.generator.get_state(),
            "grad_sum": self.stats.grad_sum.clone(),
            "grad_count": self.stats.count.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (a ``state_dict`` of a fit with the same settings)."""
        self.start_from(state["gaussians"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])
        self.stats.grad_sum, self.stats.count = (  # a checkpoint is read onto the CPU
            state["grad_sum"].to(self.device, copy=True),
            state["grad_count"].to(self.device, copy=True),
        )

    def start_from(self, gaussians: dict[str, Tensor]) -> None:
        """Replace the Gaussians by saved ones; Adam and the statistics start afresh for them."""
        self.gaussians.load_state_dict(gaussians)
        self.gaussians.requires_grad_()
        self.optimizer = _adam(self.gaussians, self.lr)
        self.stats = GradientStats(len(self.gaussians), self.device)


# ---------------------------------------------------------------- 2D: one image


class ImageFit(Fit):
    """Fit 2D Gaussians to one image (GaussianImage, Zhang et al. 2024); see
    ``labkit.splatting.loop.fit_2d`` for the arguments."""

    def __init__(
        self,
        image: Tensor,
        num_gaussians: int,
        steps: int,
        *,
        lr: dict[str, float] | None = None,
        means_lr_final_ratio: float = 0.05,
        densify: DensifyConfig | None = None,
        mode: str = "sum",
        loss: str = "l2",
        ssim_weight: float = 0.0,
        init: str = "image",
        generator: torch.Generator | None = None,
        tile: int = 8,
    ) -> None:
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image must be [H, W, 3] in [0, 1]; got {tuple(image.shape)}")
        if init not in ("image", "random"):
            raise ValueError(f"init must be 'image' or 'random'; got {init!r}")
        generator = generator if generator is not None else _default_generator()
        self.image = image.float()  # [H, W, 3], on the device the fit runs on
        self.height, self.width = image.shape[:2]
        self.mode, self.loss_kind, self.ssim_weight, self.tile = mode, loss, ssim_weight, tile
        if init == "image":  # each Gaussian starts with the colour of the pixel under it
            gaussians = gaussians_2d_from_image(self.image, num_gaussians, generator)
        else:
            gaussians = random_gaussians_2d(
                num_gaussians, self.height, self.width, generator, device=image.device
            )
        super().__init__(
            gaussians, {**LR_2D, **(lr or {})}, steps, means_lr_final_ratio, densify, generator
        )

    def render(self) -> Tensor:
        """``[H, W, 3]`` render of the current Gaussians (not clamped: the loss sees this)."""
        return render_gaussians_2d(self.gaussians, self.height, self.width, self.mode, self.tile)

    def loss(self) -> tuple[Tensor, Tensor, None]:
        rendered = self.render()  # [H, W, 3]
        loss = image_loss(rendered, self.image, self.ssim_weight, self.loss_kind)
        return loss, self.gaussians.means, None  # the means are already image-space

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        shown = self.preview()
        return {
            "psnr": psnr(shown, self.image).item(),
            "ssim": ssim(shown, self.image).item(),
            "num_gaussians": float(len(self.gaussians)),
        }

    @torch.no_grad()
    def preview(self) -> Tensor:
        return self.render().clamp(0, 1)

    def preview_target(self) -> Tensor:
        return self.image


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


def scene_extent(points: Tensor) -> float:
    """The points' largest distance from their centroid (3DGS's ``spatial_lr_scale``). ``[M, 3]``."""
    return (points - points.mean(0)).norm(dim=-1).max().item()


class SceneFit(Fit):
    """Fit 3D Gaussians to posed images (3DGS, Kerbl et al. 2023); see
    ``labkit.splatting.loop.fit_3d`` for the arguments.

    Each step renders one training view; an epoch visits every view once in a random order,
    ``order`` holds the views left in the current epoch (part of the state).
    """

    def __init__(
        self,
        data: SceneData,
        steps: int,
        *,
        sh_degree: int = 0,
        lr: dict[str, float] | None = None,
        means_lr_final_ratio: float = 0.01,
        densify: DensifyConfig | None = None,
        loss: str = "l1",
        ssim_weight: float = 0.2,
        init: str = "points",
        generator: torch.Generator | None = None,
        tile: int = 8,
    ) -> None:
        generator = generator if generator is not None else _default_generator()
        self.data, self.loss_kind, self.ssim_weight, self.tile = data, loss, ssim_weight, tile
        if init == "points":  # 3DGS: one Gaussian per sparse (SfM) point
            gaussians = gaussians_3d_from_points(data.points, data.colors, sh_degree)
        elif init == "random":  # 3DGS without SfM points: as many, uniform in their bounding cube
            half = data.points.abs().max().item()
            gaussians = random_gaussians_3d(
                len(data.points), half, sh_degree, generator, device=data.points.device
            )
        else:
            raise ValueError(f"init must be 'points' or 'random'; got {init!r}")
        lr = {**LR_3D, **(lr or {})}
        lr["means"] = lr["means"] * scene_extent(data.points)
        super().__init__(gaussians, lr, steps, means_lr_final_ratio, densify, generator)
        self.order: list[int] = []

    def loss(self) -> tuple[Tensor, Tensor, Tensor]:
        if not self.order:  # a new epoch: every training view once, in a random order
            views = len(self.data.train_cameras)
            order = torch.randperm(views, generator=self.generator, device=self.generator.device)
            self.order = order.tolist()
        view = self.order.pop()
        out = render_gaussians_3d(
            self.gaussians, self.data.train_cameras[view], self.data.background, tile=self.tile
        )
        target = self.data.train_images[view]  # [H, W, 3]
        loss = image_loss(out.image, target, self.ssim_weight, self.loss_kind)
        return loss, out.means2d, out.visible

    def evaluate(self) -> dict[str, float]:
        data = self.data
        p, s, _ = evaluate_3d(self.gaussians, data.test_cameras, data.test_images, data.background)
        return {"psnr": p, "ssim": s, "num_gaussians": float(len(self.gaussians))}

    @torch.no_grad()
    def preview(self) -> Tensor:
        camera = self.data.test_cameras[0]
        return render_gaussians_3d(self.gaussians, camera, self.data.background).image.clamp(0, 1)

    def preview_target(self) -> Tensor:
        return self.data.test_images[0]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "order": list(self.order)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.order = list(state["order"])
