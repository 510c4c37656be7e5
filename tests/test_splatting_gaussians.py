"""Gaussian parameterisations: covariances, rotations, SH colour, initialisers."""

import math

import pytest
import torch

from labkit.splatting.gaussians import (
    SH_C0,
    SH_C1,
    covariance_from_scale_rotation,
    gaussians_2d_from_image,
    gaussians_3d_from_points,
    quaternion_to_rotation,
    random_gaussians_2d,
    random_gaussians_3d,
    rgb_to_sh0,
    rotation_matrix_2d,
    sh_to_rgb,
)


def _is_spd(cov: torch.Tensor) -> bool:
    symmetric = torch.allclose(cov, cov.transpose(-1, -2), atol=1e-6)
    return symmetric and bool((torch.linalg.eigvalsh(cov) > 0).all())


def test_covariance_2d_is_spd_with_eigenvalues_scale_squared():
    g = torch.Generator().manual_seed(0)
    scales = torch.rand(50, 2, generator=g) * 3 + 0.1
    cov = covariance_from_scale_rotation(scales, rotation_matrix_2d(torch.randn(50, generator=g)))
    assert _is_spd(cov)
    # A rotation does not change the spectrum: the eigenvalues are s1², s2².
    expected = (scales**2).sort(dim=1).values
    assert torch.allclose(torch.linalg.eigvalsh(cov), expected, rtol=1e-5)


def test_covariance_3d_is_spd_for_any_parameters():
    g = torch.Generator().manual_seed(1)
    log_scales = torch.randn(100, 3, generator=g)
    quats = torch.randn(100, 4, generator=g)  # not normalised on purpose
    cov = covariance_from_scale_rotation(log_scales.exp(), quaternion_to_rotation(quats))
    assert _is_spd(cov.double())
    assert torch.allclose(torch.linalg.det(cov), (2 * log_scales.sum(1)).exp(), rtol=1e-4)


def test_rotation_2d_hand_case():
    # 90°: the x axis goes to the y axis.
    R = rotation_matrix_2d(torch.tensor([math.pi / 2]))[0]
    assert torch.allclose(R @ torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), atol=1e-7)


def test_quaternion_rotation_is_orthonormal_with_det_one():
    quats = torch.randn(200, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    R = quaternion_to_rotation(quats)
    eye = torch.eye(3, dtype=torch.float64).expand(200, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(200, dtype=torch.float64), atol=1e-12)


def test_quaternion_hand_case_and_sign_invariance():
    # q = (cos 45°, 0, 0, sin 45°) turns 90° about z: x -> y.
    q = torch.tensor([[math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]])
    R = quaternion_to_rotation(q)[0]
    assert torch.allclose(
        R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6
    )
    assert torch.allclose(quaternion_to_rotation(-q), quaternion_to_rotation(q))  # q and -q: same R
    assert torch.allclose(quaternion_to_rotation(3 * q), quaternion_to_rotation(q))  # normalised


def test_quaternion_matches_scipy():
    Rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    quats = torch.randn(20, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = quaternion_to_rotation(quats)
    theirs = Rotation.from_quat(quats[:, [1, 2, 3, 0]].numpy()).as_matrix()  # scipy: (x, y, z, w)
    assert torch.allclose(ours, torch.from_numpy(theirs), atol=1e-12)


def test_sh_degree_zero_round_trip_and_degree_one_hand_case():
    rgb = torch.tensor([[0.2, 0.5, 0.9]])
    sh0 = rgb_to_sh0(rgb)[:, None]  # [1, 1, 3]
    assert torch.allclose(sh_to_rgb(sh0), rgb, atol=1e-7)
    # Degree 1 seen along +z: only f2 (the "z" coefficient) adds, + C1 · f2.
    sh1 = torch.cat([sh0, torch.zeros(1, 3, 3)], dim=1)
    sh1[0, 2] = torch.tensor([0.1, 0.0, -0.1])
    out = sh_to_rgb(sh1, torch.tensor([[0.0, 0.0, 1.0]]))
    assert torch.allclose(out, rgb + SH_C1 * torch.tensor([0.1, 0.0, -0.1]), atol=1e-7)
    # Seen along +y the sign is negative on f1: -C1 · f1.
    sh1[0, 2] = 0
    sh1[0, 1] = 0.2
    out = sh_to_rgb(sh1, torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.allclose(out, (rgb - SH_C1 * 0.2).clamp(min=0), atol=1e-7)
    assert SH_C0 == pytest.approx(0.28209479) and SH_C1 == pytest.approx(0.48860251)


def test_sh_colour_clamped_at_zero_and_degree_one_needs_directions():
    assert sh_to_rgb(torch.full((1, 1, 3), -10.0)).min() == 0
    with pytest.raises(ValueError, match="directions"):
        sh_to_rgb(torch.zeros(1, 4, 3))


def test_initialisers_2d():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(20, 30, 3, generator=g)
    gs = gaussians_2d_from_image(image, 100, g)
    assert gs.means.shape == (100, 2) and gs.colors.shape == (100, 3) and len(gs) == 100
    assert (gs.means[:, 0] < 30).all() and (gs.means[:, 1] < 20).all() and (gs.means >= 0).all()
    # Each colour is the pixel under the mean.
    cols, rows = gs.means.floor().long().unbind(1)
    assert torch.equal(gs.colors, image[rows, cols])
    # The footprints sum to about 1 per pixel: N · o · 2πσ² = H W.
    total = len(gs) * gs.opacities * 2 * math.pi * gs.scales.prod(1)
    assert torch.allclose(total, torch.full_like(total, 20 * 30.0), rtol=1e-5)
    assert random_gaussians_2d(10, 20, 30, g).covariances().shape == (10, 2, 2)


def test_initialisers_3d():
    # Points on a unit grid: each point's 3 nearest neighbours are at distance 1 (or more at
    # the border), so interior scales are exactly 1.
    grid = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    gs = gaussians_3d_from_points(grid, torch.full((64, 3), 0.5), sh_degree=1)
    assert torch.allclose(gs.scales.min(), torch.tensor(1.0))
    assert gs.sh.shape == (64, 4, 3) and gs.sh_degree == 1
    assert torch.allclose(gs.opacities, torch.full((64,), 0.1))
    assert torch.allclose(
        sh_to_rgb(gs.sh, torch.nn.functional.normalize(torch.ones(64, 3))), torch.full((64, 3), 0.5)
    )
    rg = random_gaussians_3d(10, extent=2.0, generator=torch.Generator().manual_seed(0))
    assert rg.sh_degree == 0 and rg.means.abs().max() <= 2.0


@pytest.mark.parametrize("opacity", [0.0, 1.0, 1.5, float("nan")])
def test_initialisers_refuse_an_opacity_whose_logit_is_not_finite(opacity):
    # At exactly 0 or 1 the learned logit is -inf / +inf and its gradient 0: the Gaussian's
    # opacity could never change, silently. Refused with a message instead.
    from labkit.splatting.gaussians import gaussians_3d_from_points, random_gaussians_2d

    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        random_gaussians_2d(4, 8, 8, opacity=opacity)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        gaussians_3d_from_points(torch.zeros(3, 3), torch.ones(3, 3) / 2, opacity=opacity)
