"""Image quality: PSNR and SSIM, for images in ``[0, 1]`` laid out ``[H, W, 3]`` (or ``[H, W]``).

``ssim`` follows Wang et al. 2004 ("Image Quality Assessment: From Error Visibility to Structural
Similarity", eq. 13) with their settings: an 11-tap Gaussian window of σ = 1.5, ``K1 = 0.01``,
``K2 = 0.03``, population (not sample) statistics, and the mean SSIM over the window positions that
fit inside the image ("valid"), averaged over channels. That is what
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=-1)`` computes; the tests compare the two.
(3DGS's training loss zero-pads instead, which also scores the border; the difference is small.)

Explained in notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "gaussian_window"]


def psnr(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range² / MSE)`` in dB (inf if equal).

    Args:
        a, b: same shape, values in ``[0, data_range]``.

    Returns:
        scalar tensor. 20 dB ≈ a visible blur, 30 dB ≈ hard to tell apart at a glance.
    """
    if a.shape != b.shape:
        raise ValueError(
            f"psnr needs images of the same shape; got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    # float64: the mean of ~50k squared errors of order 1e-3 to 1e-4; in float32 its last digits
    # would depend on the order of the sum (another thread count, another device)
    mse = torch.mean((a.double() - b.double()) ** 2)
    return (10 * torch.log10(data_range**2 / mse)).to(
        a.dtype if a.is_floating_point() else torch.float32
    )


def gaussian_window(
    size: int = 11,
    sigma: float = 1.5,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """1D Gaussian taps ``exp(-x² / 2σ²)`` at ``x = -(size-1)/2 … (size-1)/2``, summing to 1. ``[size]``.

    Computed in float64 and rounded once to ``dtype``: as close as ``dtype`` gets to the float64
    window of skimage, which the tests compare ``ssim`` with.
    """
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return (w / w.sum()).to(dtype)


def ssim(
    a: Tensor,
    b: Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Mean structural similarity of two images (differentiable; usable as a loss ``1 - ssim``).

    ``SSIM = (2 μa μb + C1)(2 σab + C2) / ((μa² + μb² + C1)(σa² + σb² + C2))`` with local means,
    variances and covariance taken under the Gaussian window, ``C1 = (k1 L)²``, ``C2 = (k2 L)²``.

    Args:
        a, b: ``[H, W, C]`` or ``[H, W]``, same shape, both at least ``window_size`` pixels a side.

    Returns:
        scalar tensor in ``[-1, 1]``; 1 for identical images.
    """
    if a.shape != b.shape:
        raise ValueError(
            f"ssim needs images of the same shape; got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if min(a.shape[0], a.shape[1]) < window_size:
        raise ValueError(
            f"ssim needs images at least {window_size} pixels a side; got {tuple(a.shape)}"
        )
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    dtype = a.dtype if a.is_floating_point() else torch.float32
    x = torch.stack([a, b]).to(dtype).permute(0, 3, 1, 2)  # [2, C, H, W]
    channels = x.shape[1]

    w = gaussian_window(window_size, sigma, dtype, x.device)
    # The 2D window is separable (outer product of w with itself): filter rows, then columns.
    w_row = w.view(1, 1, 1, -1).expand(channels, 1, 1, window_size)
    w_col = w.view(1, 1, -1, 1).expand(channels, 1, window_size, 1)

    def blur(t: Tensor) -> Tensor:  # "valid" local weighted mean per channel
        return F.conv2d(F.conv2d(t, w_row, groups=channels), w_col, groups=channels)

    mu_a, mu_b = blur(x[0:1]), blur(x[1:2])
    var_a = blur(x[0:1] ** 2) - mu_a**2  # σa² = E[a²] - μa²
    var_b = blur(x[1:2] ** 2) - mu_b**2
    cov_ab = blur(x[0:1] * x[1:2]) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.mean()
