"""Rasterisers: turn image-space Gaussians ("splats") into pixels, differentiably.

Two ways of combining the splats that cover a pixel p (``G_i(p) = exp(-½ dᵀ Σ_i'⁻¹ d)``,
``d = p - μ_i``, ``α_i = o_i G_i(p)``):

* ``"sum"``, order-free accumulated sum (GaussianImage, Zhang et al. 2024, eq. 4):
  ``C(p) = Σ_i c_i α_i``. No sorting, no occlusion: right for fitting one image, cheap.
* ``"alpha"``, front-to-back alpha compositing (3DGS, Kerbl et al. 2023, eq. 3):
  ``C(p) = Σ_i c_i α_i T_i + T_final · background``, ``T_i = Π_{j<i} (1 - α_j)``, with the splats
  sorted near to far. As in 3DGS: ``α_i`` is clamped at 0.99 (a fully opaque splat would make
  ``T = 0`` and stop all gradient to what lies behind), splats with ``α_i < 1/255`` are skipped
  (invisible in an 8-bit image), and a pixel stops once ``T_i (1 - α_i) < 1e-4`` (the splat that
  would push it below is not added; 3DGS's "early stop").

Both evaluate a splat only inside its ``sigma_cutoff``-σ ellipse (3σ, as 3DGS's tile bounds).

How the work is organised (``render``; the obvious ``render_dense`` is the test reference):
``render_dense`` evaluates every (pixel, splat) pair: O(P × N) memory and time, chunked over
pixels; the early stop becomes a mask, so unlike the CUDA kernel it saves no arithmetic. That is
too slow for thousands of splats, so ``render`` does what 3DGS's CUDA rasteriser does, vectorised:
cut the image into ``tile × tile`` tiles, list every (tile, splat) pair whose 3σ bounding box
touches the tile ("duplicate with keys"), sort the list by (tile, depth order), and evaluate each
pair on the tile's pixels only. The cumulative product becomes a cumulative sum of ``log(1 - α)``
inside each tile's run of the sorted list. Cost: O(#pairs × tile²) instead of O(N × H × W).

Explained in notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from labkit.splatting.cameras import (
    Camera,
    project_covariances,
    project_points,
    world_to_camera,
)
from labkit.splatting.gaussians import Gaussians2D, Gaussians3D, sh_to_rgb

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "T_MIN",
    "Splats",
    "make_splats",
    "tile_pairs",
    "render",
    "render_dense",
    "render_gaussians_2d",
    "RenderOutput",
    "render_gaussians_3d",
]

ALPHA_MAX = 0.99  # clamp, 3DGS forward.cu
ALPHA_MIN = 1.0 / 255.0  # skip threshold
T_MIN = 1e-4  # early-stop transmittance


@dataclass
class Splats:
    """N Gaussians already on the image plane, in compositing order (front first for "alpha").

    ``means2d [N, 2]`` pixels (x, y); ``conics [N, 2, 2]`` inverse covariances Σ'⁻¹;
    ``colors [N, 3]``; ``opacities [N]``; ``radii [N]`` pixels (cutoff · σ_max, 0 = not drawn).
    """

    means2d: Tensor
    conics: Tensor
    colors: Tensor
    opacities: Tensor
    radii: Tensor


def make_splats(
    means2d: Tensor,
    covariances: Tensor,
    colors: Tensor,
    opacities: Tensor,
    sigma_cutoff: float = 3.0,
) -> Splats:
    """Splats from image-space covariances ``[N, 2, 2]``: inverts Σ', bounds each footprint.

    ``Σ'⁻¹ = [[c, -b], [-b, a]] / (ac - b²)`` for ``Σ' = [[a, b], [b, c]]``; the largest eigenvalue
    ``λ_max = (a+c)/2 + sqrt(((a-c)/2)² + b²)`` gives the radius ``cutoff · sqrt(λ_max)`` that
    contains the whole ``cutoff``-σ ellipse.
    """
    a, b, c = covariances[:, 0, 0], covariances[:, 0, 1], covariances[:, 1, 1]
    det = a * c - b * b
    conics = (
        torch.stack([torch.stack([c, -b], -1), torch.stack([-b, a], -1)], -2) / det[:, None, None]
    )
    with torch.no_grad():  # the radius only chooses tiles; no gradient flows through it
        half_gap = torch.sqrt(((a - c) / 2) ** 2 + b * b)
        radii = sigma_cutoff * torch.sqrt((a + c) / 2 + half_gap)
    return Splats(means2d, conics, colors, opacities, radii)


def _mahalanobis_power(d: Tensor, conics: Tensor) -> Tensor:
    """``-½ dᵀ Σ'⁻¹ d`` for ``d [..., 2]`` and ``conics [..., 2, 2]`` (broadcast) → ``[...]``."""
    dx, dy = d[..., 0], d[..., 1]
    return -0.5 * (
        conics[..., 0, 0] * dx * dx + 2 * conics[..., 0, 1] * dx * dy + conics[..., 1, 1] * dy * dy
    )


def _alpha(power: Tensor, opacities: Tensor, mode: str, sigma_cutoff: float) -> Tensor:
    """``α = o · exp(power)`` inside the cutoff ellipse, with 3DGS's clamp and skip for "alpha"."""
    inside = power >= -0.5 * sigma_cutoff**2
    alpha = opacities * torch.exp(power)
    if mode == "alpha":
        alpha = alpha.clamp(max=ALPHA_MAX)
        inside = inside & (alpha >= ALPHA_MIN)
    return torch.where(inside, alpha, torch.zeros_like(alpha))


def _check_mode(mode: str) -> None:
    if mode not in ("sum", "alpha"):
        raise ValueError(f"mode must be 'sum' (GaussianImage) or 'alpha' (3DGS); got {mode!r}")


# ---------------------------------------------------------------- reference: every pixel × every splat


def render_dense(
    splats: Splats,
    height: int,
    width: int,
    mode: str = "alpha",
    background: Tensor | None = None,
    sigma_cutoff: float = 3.0,
    chunk: int = 4096,
) -> tuple[Tensor, Tensor]:
    """The obvious rasteriser: α for all (pixel, splat) pairs, ``cumprod`` over splats per pixel.

    Memory O(chunk × N). Same maths as ``render`` (tests check they agree); use it to read, and
    for a handful of splats.

    Returns:
        ``image [H, W, 3]`` and accumulated ``alpha [H, W]`` (``1 - T_final``; for "sum", ``Σ α_i``).
    """
    _check_mode(mode)
    dtype, device = splats.means2d.dtype, splats.means2d.device
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device) + 0.5,
        torch.arange(width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    pixels = torch.stack([xs, ys], -1).reshape(-1, 2)  # [P, 2] pixel centres
    colors, alphas = [], []
    for start in range(0, pixels.shape[0], chunk):
        d = pixels[start : start + chunk, None, :] - splats.means2d[None]  # [p, N, 2]
        alpha = _alpha(
            _mahalanobis_power(d, splats.conics[None]), splats.opacities, mode, sigma_cutoff
        )
        alpha = alpha * (splats.radii > 0)  # [p, N]
        if mode == "sum":
            weight = alpha
        else:
            one_minus = 1 - alpha
            T = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), one_minus[:, :-1]], 1), 1)
            weight = alpha * T * (T * one_minus >= T_MIN)  # early stop as a mask
        colors.append(weight @ splats.colors)  # [p, 3]
        alphas.append(weight.sum(1))
    return _finish(torch.cat(colors), torch.cat(alphas), height, width, mode, background)


def _finish(color, alpha, height, width, mode, background) -> tuple[Tensor, Tensor]:
    color, alpha = color.reshape(height, width, 3), alpha.reshape(height, width)
    if mode == "alpha" and background is not None:
        color = color + (1 - alpha)[..., None] * background.to(color)  # T_final · background
    return color, alpha


# ---------------------------------------------------------------- tiled: what 3DGS's kernel does


def tile_pairs(
    means2d: Tensor, radii: Tensor, height: int, width: int, tile: int
) -> tuple[Tensor, Tensor]:
    """Every (tile, splat) pair whose bounding square ``μ ± r`` touches the tile, sorted.

    Args:
        means2d: ``[N, 2]`` pixels. radii: ``[N]``, 0 = skip. tile: tile side in pixels.

    Returns:
        ``tile_ids [M]`` (row-major tile index) and ``splat_ids [M]``, sorted by tile, then by splat
        index: for splats given front to back, each tile's run is in depth order (3DGS's 64-bit
        key ``tile << 32 | depth`` plays the same role).
    """
    with torch.no_grad():
        tiles_x, tiles_y = -(-width // tile), -(-height // tile)
        mx, my, r = means2d[:, 0].detach(), means2d[:, 1].detach(), radii.detach()
        on_image = (r > 0) & (mx + r >= 0) & (mx - r <= width) & (my + r >= 0) & (my - r <= height)
        x0 = ((mx - r) / tile).floor().clamp(0, tiles_x - 1).long()
        x1 = ((mx + r) / tile).floor().clamp(0, tiles_x - 1).long()
        y0 = ((my - r) / tile).floor().clamp(0, tiles_y - 1).long()
        y1 = ((my + r) / tile).floor().clamp(0, tiles_y - 1).long()
        nx = x1 - x0 + 1
        count = torch.where(on_image, nx * (y1 - y0 + 1), torch.zeros_like(nx))  # tiles per splat
        splat_ids = torch.repeat_interleave(count)  # [M]: splat i repeated count[i] times
        k = torch.arange(len(splat_ids), device=count.device)
        k = k - (torch.cumsum(count, 0) - count)[splat_ids]  # the k-th tile of its splat
        tx = x0[splat_ids] + k % nx[splat_ids]
        ty = y0[splat_ids] + k // nx[splat_ids]
        tile_ids = ty * tiles_x + tx
        order = torch.argsort(tile_ids * len(count) + splat_ids)  # keys are unique
        return tile_ids[order], splat_ids[order]


def render(
    splats: Splats,
    height: int,
    width: int,
    mode: str = "alpha",
    background: Tensor | None = None,
    sigma_cutoff: float = 3.0,
    tile: int = 8,
) -> tuple[Tensor, Tensor]:
    """Tile-based rasteriser (see module doc). Same result as ``render_dense``.

    Args:
        splats: N splats; for ``"alpha"`` sorted front (index 0) to back.
        mode: ``"sum"`` (GaussianImage) or ``"alpha"`` (3DGS).
        background: ``[3]`` colour behind everything (``"alpha"`` only); None = black.
        sigma_cutoff: splats are evaluated inside this many σ; must match ``make_splats``.
        tile: tile side in pixels. Smaller tiles waste less work on pixels far from a splat but
            make more pairs; 8 suits the 64-128 pixel images here (3DGS uses 16).

    Returns:
        ``image [H, W, 3]`` and accumulated ``alpha [H, W]``.
    """
    _check_mode(mode)
    dtype, device = splats.means2d.dtype, splats.means2d.device
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    tile_ids, ids = tile_pairs(splats.means2d, splats.radii, height, width, tile)  # [M], [M]

    # Pixel centres of every tile, [num_tiles, tile², 2].
    pixel = torch.arange(tile, dtype=dtype, device=device)
    oy, ox = torch.meshgrid(pixel, pixel, indexing="ij")
    offsets = torch.stack([ox, oy], -1).reshape(-1, 2) + 0.5
    ty, tx = torch.meshgrid(
        torch.arange(tiles_y, device=device), torch.arange(tiles_x, device=device), indexing="ij"
    )
    origins = torch.stack([tx, ty], -1).reshape(-1, 1, 2).to(dtype) * tile

    d = origins[tile_ids] + offsets - splats.means2d[ids][:, None, :]  # [M, tile², 2]
    power = _mahalanobis_power(d, splats.conics[ids][:, None])  # [M, tile²]
    alpha = _alpha(power, splats.opacities[ids][:, None], mode, sigma_cutoff)

    if mode == "sum":
        weight = alpha
    else:
        # T_i = Π_{j<i} (1 - α_j) inside the tile's run = exp(exclusive cumsum of log(1 - α)).
        # The runs are contiguous, so one global cumsum minus its value where the run starts does
        # it; float64 because that global sum reaches -1e5 where float32 keeps ~2 decimals.
        log_one_minus = torch.log1p(-alpha).double()  # [M, tile²]
        exclusive = torch.cumsum(log_one_minus, 0) - log_one_minus
        new_run = torch.ones_like(tile_ids, dtype=torch.bool)
        new_run[1:] = tile_ids[1:] != tile_ids[:-1]
        pair = torch.arange(len(ids), device=device)
        run_start = torch.cummax(torch.where(new_run, pair, 0), 0).values
        log_T = exclusive - exclusive[run_start]
        keep = log_T + log_one_minus >= math.log(T_MIN)
        weight = alpha * torch.exp(log_T).to(dtype) * keep  # α_i T_i, early-stopped

    num_tiles = tiles_x * tiles_y
    color = torch.zeros(num_tiles, tile * tile, 3, dtype=dtype, device=device).index_add(
        0, tile_ids, weight[..., None] * splats.colors[ids][:, None, :]
    )
    acc = torch.zeros(num_tiles, tile * tile, dtype=dtype, device=device)
    acc = acc.index_add(0, tile_ids, weight)

    # [tiles_y, tiles_x, tile, tile, ...] → [H', W', ...], cropped to the image.
    def untile(x: Tensor) -> Tensor:
        x = x.reshape(tiles_y, tiles_x, tile, tile, *x.shape[2:]).transpose(1, 2)
        return x.reshape(tiles_y * tile, tiles_x * tile, *x.shape[4:])[:height, :width]

    return _finish(untile(color), untile(acc), height, width, mode, background)


# ---------------------------------------------------------------- from learnable Gaussians to pixels


def render_gaussians_2d(
    gaussians: Gaussians2D, height: int, width: int, mode: str = "sum", tile: int = 8
) -> Tensor:
    """Render learnable 2D Gaussians: ``[H, W, 3]``. For ``"alpha"`` the index order is the depth order."""
    splats = make_splats(
        gaussians.means, gaussians.covariances(), gaussians.colors, gaussians.opacities
    )
    return render(splats, height, width, mode=mode, tile=tile)[0]


@dataclass
class RenderOutput:
    """One rendered view. ``image [H, W, 3]``, ``alpha [H, W]``; ``visible [V]`` are the indices
    of the Gaussians in front of the near plane and ``means2d [V, 2]`` their projected means, whose
    gradient (``means2d.grad`` after backward) drives densification; ``radii [V]`` in pixels."""

    image: Tensor
    alpha: Tensor
    visible: Tensor
    means2d: Tensor
    radii: Tensor


def render_gaussians_3d(
    gaussians: Gaussians3D,
    camera: Camera,
    background: Tensor | None = None,
    near: float = 0.2,
    low_pass: float = 0.3,
    tile: int = 8,
) -> RenderOutput:
    """The 3DGS forward pass for one camera: cull, project (EWA), colour (SH), sort, composite.

    Args:
        gaussians: N 3D Gaussians.
        camera: the view.
        background: ``[3]`` colour where nothing is opaque; None = black.
        near: Gaussians with camera depth ``z <= near`` are dropped (3DGS uses 0.2): the
            projection divides by z.
        low_pass: the 0.3-pixel² dilation of ``project_covariances``.
    """
    points_cam = world_to_camera(gaussians.means, camera)  # [N, 3]
    # Select before projecting: x/z of a point at z ≈ 0 is inf, and 0 · inf = NaN in backward.
    visible = torch.nonzero(points_cam[:, 2].detach() > near).squeeze(1)  # [V]
    points_cam = points_cam[visible]
    means = gaussians.means[visible]

    means2d = project_points(points_cam, camera)  # [V, 2]
    if means2d.requires_grad:
        means2d.retain_grad()  # read by densification: the screen-space positional gradient
    cov2d = project_covariances(gaussians.covariances()[visible], points_cam, camera, low_pass)
    directions = means - camera.center.to(means)  # camera → Gaussian
    directions = directions / directions.norm(dim=-1, keepdim=True)
    colors = sh_to_rgb(gaussians.sh[visible], directions)
    splats = make_splats(means2d, cov2d, colors, gaussians.opacities[visible])

    order = torch.argsort(points_cam[:, 2].detach(), stable=True)  # front to back
    front_to_back = Splats(
        splats.means2d[order],
        splats.conics[order],
        splats.colors[order],
        splats.opacities[order],
        splats.radii[order],
    )
    image, alpha = render(
        front_to_back, camera.height, camera.width, "alpha", background, tile=tile
    )
    return RenderOutput(image, alpha, visible, means2d, splats.radii)
