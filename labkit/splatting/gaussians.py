"""Gaussian primitives: how a learnable Gaussian is parameterised, and how to initialise a set.

Conventions used across ``labkit.splatting``:

* A covariance is never learned directly (gradient steps would leave the positive definite cone).
  It is built from a scale vector ``s`` and a rotation ``R`` as ``Σ = R S Sᵀ Rᵀ`` with
  ``S = diag(s)`` (Kerbl et al. 2023, "3D Gaussian Splatting", eq. 6), which is symmetric positive
  definite for any real parameters. Scales are stored as ``log s`` (so ``s = exp(log s) > 0``).
* 2D rotations are an angle θ; 3D rotations a quaternion ``(w, x, y, z)`` normalised before use,
  so any 4 numbers (but 0) are a valid rotation.
* Opacity is stored as a logit, ``o = sigmoid(logit)`` in ``(0, 1)``.
* 2D means are pixel coordinates ``(x, y)``: x to the right, y down, pixel ``(row i, col j)``
  covers ``[j, j+1] × [i, i+1]`` so its centre is ``(j + 0.5, i + 0.5)``.
* 3D colour is spherical harmonics (SH) of degree 0 or 1, as 3DGS: ``sh_dc [N, 1, 3]`` holds the
  degree-0 coefficient, ``sh_rest [N, K-1, 3]`` (``K = (degree+1)²``) the rest, zero-sized for
  degree 0. 3DGS gives them different learning rates, hence two tensors.

Explained in notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

__all__ = [
    "SH_C0",
    "SH_C1",
    "Gaussians2D",
    "Gaussians3D",
    "rotation_matrix_2d",
    "quaternion_to_rotation",
    "covariance_from_scale_rotation",
    "sh_to_rgb",
    "rgb_to_sh0",
    "random_gaussians_2d",
    "gaussians_2d_from_image",
    "random_gaussians_3d",
    "gaussians_3d_from_points",
]

# Real spherical harmonics normalisation constants: Y_0^0 = 1 / (2 sqrt(pi)),
# Y_1^m = sqrt(3 / (4 pi)) * (y, z, x) up to sign (the constants of 3DGS's sh_utils.py).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
_CPU = torch.device("cpu")


# ---------------------------------------------------------------- geometry: rotations, covariances


def rotation_matrix_2d(theta: Tensor) -> Tensor:
    """Rotation by angle θ (radians). ``[N]`` → ``[N, 2, 2]`` ``[[cos θ, -sin θ], [sin θ, cos θ]]``."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def quaternion_to_rotation(quats: Tensor) -> Tensor:
    """Unit quaternion ``(w, x, y, z)`` → rotation matrix (normalised first, so any non-zero q works).

    Args:
        quats: ``[N, 4]`` quaternions, scalar part first (3DGS's order; scipy's is scalar last).

    Returns:
        ``[N, 3, 3]`` rotation matrices: orthonormal, det +1. The standard formula
        ``R = I + 2w[v]× + 2[v]×²`` written out entry by entry, with ``v = (x, y, z)``.
    """
    if quats.ndim != 2 or quats.shape[-1] != 4:
        raise ValueError(f"quats must be [N, 4] (w, x, y, z); got {tuple(quats.shape)}")
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def covariance_from_scale_rotation(scales: Tensor, rotations: Tensor) -> Tensor:
    """``Σ = R S Sᵀ Rᵀ`` (3DGS eq. 6), with ``S = diag(scales)``.

    Args:
        scales: ``[N, d]`` positive standard deviations along the Gaussian's own axes.
        rotations: ``[N, d, d]`` rotations whose columns are those axes in the outer frame.

    Returns:
        ``[N, d, d]`` symmetric positive definite covariances (eigenvalues ``scales²``).
    """
    M = rotations * scales[:, None, :]  # R S: scales column k of R, [N, d, d]
    return M @ M.transpose(-1, -2)


# ---------------------------------------------------------------- colour: spherical harmonics


def sh_to_rgb(sh: Tensor, directions: Tensor | None = None) -> Tensor:
    """Colour of each Gaussian seen along ``directions``, from SH of degree 0 or 1 (3DGS's eval_sh).

    ``rgb = C0 f0 + C1 (-y f1 + z f2 - x f3) + 0.5``, clamped at 0 as in 3DGS (not at 1: the
    loss against images in ``[0, 1]`` pulls values back). The ``+0.5`` makes ``sh = 0`` mid-grey.

    Args:
        sh: ``[N, K, 3]`` coefficients, K = 1 (degree 0) or 4 (degree 1).
        directions: ``[N, 3]`` unit vectors from the camera centre to each Gaussian; only read
            for degree 1.

    Returns:
        ``[N, 3]`` RGB.
    """
    rgb = SH_C0 * sh[:, 0]
    if sh.shape[1] == 4:
        if directions is None:
            raise ValueError("degree-1 SH colour depends on the view: pass directions [N, 3]")
        x, y, z = directions[:, 0:1], directions[:, 1:2], directions[:, 2:3]
        rgb = rgb + SH_C1 * (-y * sh[:, 1] + z * sh[:, 2] - x * sh[:, 3])
    elif sh.shape[1] != 1:
        raise ValueError(f"only SH degree 0 (K=1) or 1 (K=4) are implemented; got K={sh.shape[1]}")
    return (rgb + 0.5).clamp(min=0.0)


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """Inverse of degree-0 ``sh_to_rgb``: ``f0 = (rgb - 0.5) / C0``. ``[..., 3]`` → ``[..., 3]``."""
    return (rgb - 0.5) / SH_C0


# ---------------------------------------------------------------- the two parameter sets


class _ParameterSet:
    """Shared plumbing: the learnable tensors by name, as Adam's parameter groups want them."""

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def replace(self, **tensors: Tensor):
        return replace(self, **tensors)  # type: ignore[type-var]

    def __len__(self) -> int:
        return self.means.shape[0]  # type: ignore[attr-defined]

    def requires_grad_(self, flag: bool = True):
        for t in self.tensors().values():
            t.requires_grad_(flag)
        return self

    def detach(self):
        return replace(self, **{k: v.detach().clone() for k, v in self.tensors().items()})  # type: ignore[type-var]

    def state_dict(self) -> dict[str, Tensor]:
        """The tensors by field name, detached: what a checkpoint stores as its ``model``."""
        return {k: v.detach() for k, v in self.tensors().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Take the tensors of ``state`` (the count N may differ: densification changes it).

        Raises:
            KeyError: ``state`` does not have exactly this set's fields (a 2D set for a 3D one).
            ValueError: the tensors disagree on N, or a per-Gaussian shape differs (another SH
                degree, another dimension).
        """
        own = self.tensors()
        if set(state) != set(own):
            raise KeyError(f"expected tensors {sorted(own)}, got {sorted(state)}")
        counts = {t.shape[0] for t in state.values()}
        wrong = [k for k, t in state.items() if t.shape[1:] != own[k].shape[1:]]
        if len(counts) != 1 or wrong:
            shapes = {k: tuple(t.shape) for k, t in state.items()}
            raise ValueError(f"tensor shapes do not fit {type(self).__name__}: {shapes}")
        for name, tensor in state.items():  # onto this set's device (checkpoints load on the CPU)
            mine = own[name]
            setattr(self, name, tensor.detach().to(mine.device, mine.dtype, copy=True))


@dataclass
class Gaussians2D(_ParameterSet):
    """N learnable 2D Gaussians in pixel coordinates (GaussianImage, Zhang et al. 2024, sec. 3).

    Fields (all learnable): ``means [N, 2]`` (x, y in pixels), ``log_scales [N, 2]``,
    ``angles [N]`` (radians), ``colors [N, 3]``, ``opacity_logits [N]``. Colours are raw, not
    squashed by a sigmoid, as in GaussianImage: the order-free sum adds colours, so a Gaussian may
    need a negative one to correct its neighbours' overlap; the render is clamped for display.
    """

    means: Tensor
    log_scales: Tensor
    angles: Tensor
    colors: Tensor
    opacity_logits: Tensor

    @property
    def scales(self) -> Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    def rotations(self) -> Tensor:
        """``[N, 2, 2]`` ``R(θ)``."""
        return rotation_matrix_2d(self.angles)

    def covariances(self) -> Tensor:
        """``[N, 2, 2]`` image-space covariances ``R(θ) S Sᵀ R(θ)ᵀ`` in pixels²."""
        return covariance_from_scale_rotation(self.scales, self.rotations())


@dataclass
class Gaussians3D(_ParameterSet):
    """N learnable 3D Gaussians (3DGS, Kerbl et al. 2023, sec. 4).

    Fields (all learnable): ``means [N, 3]`` world positions, ``log_scales [N, 3]``,
    ``quats [N, 4]`` (w, x, y, z; normalised when used), ``opacity_logits [N]``,
    ``sh_dc [N, 1, 3]`` and ``sh_rest [N, K-1, 3]`` colour coefficients (see module docstring).
    """

    means: Tensor
    log_scales: Tensor
    quats: Tensor
    opacity_logits: Tensor
    sh_dc: Tensor
    sh_rest: Tensor

    @property
    def scales(self) -> Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def sh(self) -> Tensor:
        """``[N, K, 3]`` all SH coefficients."""
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)

    @property
    def sh_degree(self) -> int:
        return int(math.isqrt(1 + self.sh_rest.shape[1])) - 1

    def rotations(self) -> Tensor:
        """``[N, 3, 3]`` ``R(q)``."""
        return quaternion_to_rotation(self.quats)

    def covariances(self) -> Tensor:
        """``[N, 3, 3]`` world-space covariances ``R(q) S Sᵀ R(q)ᵀ``."""
        return covariance_from_scale_rotation(self.scales, self.rotations())


# ---------------------------------------------------------------- initialisers


def _logit(p: float | Tensor, device: torch.device | str | None = None) -> Tensor:
    """The opacity logit of a starting opacity, which must lie strictly between 0 and 1."""
    p = torch.as_tensor(p, dtype=torch.float32, device=device)
    if not bool(((p > 0) & (p < 1)).all()):
        raise ValueError(
            f"opacity must be strictly between 0 and 1, got {p.min().item()}..{p.max().item()}: "
            "the fit learns its logit, which is -inf at 0 and +inf at 1 (no gradient there, "
            "so such a Gaussian's opacity could never change); e.g. 0.1 or 0.5"
        )
    return torch.log(p / (1 - p))


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Where random numbers are drawn: on the generator's device (so a CPU generator gives the
    same Gaussians whichever device they are then moved to), or on ``device`` without one."""
    return generator.device if generator is not None else device


def random_gaussians_2d(
    num: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    opacity: float = 0.5,
    device: torch.device | str | None = None,
) -> Gaussians2D:
    """N Gaussians at uniform positions with random colours in ``[0, 1]`` and random angles.

    Isotropic, with the scale of ``gaussians_2d_from_image``. ``device``: where they live
    (None: the generator's device, the CPU without one); drawn on the generator's device.
    """
    device = torch.device(device) if device is not None else _draw_device(generator, _CPU)
    draw = _draw_device(generator, device)
    size = torch.tensor([width, height], device=draw)
    means = (torch.rand(num, 2, generator=generator, device=draw) * size).to(device)
    colors = torch.rand(num, 3, generator=generator, device=draw).to(device)
    return _gaussians_2d_at(means, colors, height, width, generator, opacity)


def gaussians_2d_from_image(
    image: Tensor, num: int, generator: torch.Generator | None = None, opacity: float = 0.5
) -> Gaussians2D:
    """N Gaussians at uniform random pixels, each with the colour of the pixel under it.

    Args:
        image: ``[H, W, 3]`` in ``[0, 1]``.
        num: number of Gaussians N.

    With the order-free sum ``Σ c_i o_i G_i(p)`` a pixel receives about ``o · 2πσ² / (H W / N)``
    Gaussians' worth of colour; the scale below makes that 1, so the first render is a blurred
    copy of the image rather than a saturated or a dark one.
    """
    height, width = image.shape[:2]
    draw = _draw_device(generator, image.device)  # the Gaussians go to the image's device
    rows = torch.randint(0, height, (num,), generator=generator, device=draw).to(image.device)
    cols = torch.randint(0, width, (num,), generator=generator, device=draw).to(image.device)
    jitter = torch.rand(num, 2, generator=generator, device=draw)  # anywhere inside the pixel
    means = torch.stack([cols, rows], -1).float() + jitter.to(image.device)
    return _gaussians_2d_at(means, image[rows, cols].float(), height, width, generator, opacity)


def _gaussians_2d_at(
    means: Tensor, colors: Tensor, height: int, width: int, generator, opacity: float
) -> Gaussians2D:
    num, device = means.shape[0], means.device
    logit = _logit(opacity, device)  # first: it checks 0 < opacity < 1
    sigma = math.sqrt(height * width / (2 * math.pi * num * opacity))  # o · 2πσ² = H W / N
    angles = torch.rand(num, generator=generator, device=_draw_device(generator, device))
    return Gaussians2D(
        means=means,
        log_scales=torch.full((num, 2), math.log(sigma), device=device),
        angles=angles.to(device) * math.pi,
        colors=colors,
        opacity_logits=logit.expand(num).clone(),
    )


def random_gaussians_3d(
    num: int,
    extent: float = 1.0,
    sh_degree: int = 0,
    generator: torch.Generator | None = None,
    opacity: float = 0.1,
    device: torch.device | str | None = None,
) -> Gaussians3D:
    """N Gaussians uniform in the cube ``[-extent, extent]³`` with random colours.

    3DGS falls back to this when no SfM points exist (its synthetic Blender scenes).
    ``device``: where they live (None: the generator's device, the CPU without one); drawn on
    the generator's device.
    """
    device = torch.device(device) if device is not None else _draw_device(generator, _CPU)
    draw = _draw_device(generator, device)
    points = (torch.rand(num, 3, generator=generator, device=draw) * 2 - 1) * extent
    colors = torch.rand(num, 3, generator=generator, device=draw)
    return gaussians_3d_from_points(points.to(device), colors.to(device), sh_degree, opacity)


def gaussians_3d_from_points(
    points: Tensor, colors: Tensor, sh_degree: int = 0, opacity: float = 0.1
) -> Gaussians3D:
    """One isotropic Gaussian per point (3DGS sec. 5.1, ``create_from_pcd``).

    Args:
        points: ``[N, 3]`` world positions (e.g. sparse "SfM" points).
        colors: ``[N, 3]`` RGB in ``[0, 1]``: becomes the degree-0 SH coefficient.
        sh_degree: 0 or 1; higher coefficients start at 0 (view-independent colour).
        opacity: starting opacity, low (0.1) so early Gaussians do not occlude each other.

    The scale is the root mean squared distance to the 3 nearest other points, so neighbouring
    Gaussians just touch and the cloud covers the surface without big holes or big overlaps.
    """
    if sh_degree not in (0, 1):
        raise ValueError(f"sh_degree must be 0 or 1; got {sh_degree}")
    num = points.shape[0]
    points = points.float()
    squared = torch.cdist(points, points).pow(2)  # [N, N]; fine for the few thousand points here
    squared.fill_diagonal_(float("inf"))
    k = min(3, max(num - 1, 1))
    mean_sq = squared.topk(k, dim=1, largest=False).values.mean(dim=1).clamp(min=1e-7)  # [N]
    quats = torch.zeros(num, 4, device=points.device)
    quats[:, 0] = 1.0  # identity rotation
    return Gaussians3D(
        means=points.clone(),
        log_scales=(0.5 * mean_sq.log())[:, None].repeat(1, 3),  # log sqrt(mean d²)
        quats=quats,
        opacity_logits=_logit(opacity, points.device).expand(num).clone(),
        sh_dc=rgb_to_sh0(colors.float())[:, None, :].clone(),
        sh_rest=torch.zeros(num, (sh_degree + 1) ** 2 - 1, 3, device=points.device),
    )
