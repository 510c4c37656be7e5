"""PSNR and SSIM: hand cases and scikit-image."""

import math

import numpy as np
import pytest
import torch

from labkit.splatting.metrics import gaussian_window, psnr, ssim


def test_psnr_hand_cases():
    a = torch.zeros(8, 8, 3)
    # Every pixel off by 0.1: MSE = 0.01, PSNR = 10 log10(1 / 0.01) = 20 dB.
    assert psnr(a, a + 0.1).item() == pytest.approx(20.0, abs=1e-4)
    # Half the pixels off by 0.1: MSE = 0.005, PSNR = 20 + 10 log10 2.
    b = a.clone()
    b[:4] = 0.1
    assert psnr(a, b).item() == pytest.approx(20 + 10 * math.log10(2), abs=1e-4)
    assert math.isinf(psnr(a, a).item())
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, a[:4])


def test_gaussian_window():
    w = gaussian_window(11, 1.5)
    assert w.shape == (11,) and w.sum().item() == pytest.approx(1.0)
    assert w[5] / w[6] == pytest.approx(math.exp(1 / (2 * 1.5**2)))  # exp(-x²/2σ²) ratio at x=0,1


def test_ssim_hand_cases():
    a = torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(0))
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    # Two flat images 0.5 and 0.6: σ = 0 so only the luminance term is left,
    # (2 μa μb + C1) / (μa² + μb² + C1) with C1 = 1e-4. In float64: in float32, E[a²] - μ² leaves
    # ~1e-7 of rounding in σ², which C2 = 9e-4 turns into ~1e-4 of SSIM.
    flat_a = torch.full((16, 16), 0.5, dtype=torch.float64)
    flat_b = torch.full((16, 16), 0.6, dtype=torch.float64)
    expected = (2 * 0.5 * 0.6 + 1e-4) / (0.25 + 0.36 + 1e-4)
    assert ssim(flat_a, flat_b).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8))


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((40, 33, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    expected = skm.structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1,
    )
    assert ssim(torch.from_numpy(a), torch.from_numpy(b)).item() == pytest.approx(
        expected, abs=1e-10
    )
    grey = skm.structural_similarity(
        a[..., 0],
        b[..., 0],
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert ssim(torch.from_numpy(a[..., 0]), torch.from_numpy(b[..., 0])).item() == pytest.approx(
        grey, abs=1e-10
    )


def test_ssim_is_differentiable():
    a = torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    b = torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(2))
    (1 - ssim(a, b)).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
