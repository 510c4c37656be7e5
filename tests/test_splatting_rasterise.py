"""Rasterisers: closed forms for one and two splats, 3DGS's thresholds, tiled == dense, gradients."""

import math

import pytest
import torch

from labkit.splatting.cameras import Camera, look_at
from labkit.splatting.gaussians import Gaussians3D, rgb_to_sh0
from labkit.splatting.rasterise import (
    ALPHA_MAX,
    Splats,
    make_splats,
    render,
    render_dense,
    render_gaussians_3d,
)

D = torch.float64


def _splats(means, covs, colors, opacities, dtype=D) -> Splats:
    t = lambda x: torch.as_tensor(x, dtype=dtype)  # noqa: E731
    return make_splats(t(means), t(covs), t(colors), t(opacities))


def _gauss(pixel_xy, mean, cov) -> float:
    """exp(-½ dᵀ Σ⁻¹ d) by the textbook formula."""
    d = torch.tensor(pixel_xy, dtype=D) - torch.tensor(mean, dtype=D)
    return math.exp(-0.5 * (d @ torch.linalg.inv(torch.tensor(cov, dtype=D)) @ d).item())


@pytest.mark.parametrize("renderer", [render, render_dense])
def test_one_gaussian_matches_closed_form(renderer):
    mean, cov, color, o = [10.3, 7.6], [[4.0, 1.0], [1.0, 2.0]], [1.0, 0.5, 0.25], 0.8
    s = _splats([mean], [cov], [color], [o])
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=D)
    summed, _ = renderer(s, 16, 20, mode="sum")
    alpha_img, acc = renderer(s, 16, 20, mode="alpha", background=bg)
    for row, col in [(7, 10), (5, 12), (9, 8), (7, 13)]:
        a = o * _gauss([col + 0.5, row + 0.5], mean, cov)  # pixel centre (j + ½, i + ½)
        assert torch.allclose(summed[row, col], a * torch.tensor(color, dtype=D))
        # alpha: α c + (1 - α) background
        assert torch.allclose(alpha_img[row, col], a * torch.tensor(color, dtype=D) + (1 - a) * bg)
        assert acc[row, col].item() == pytest.approx(a)
    # Beyond 3σ nothing is drawn. At pixel (7, 17), d = (7.2, -0.1) and with Σ⁻¹ = [[2, -1],
    # [-1, 4]] / 7, dᵀΣ⁻¹d = (103.68 + 1.44 + 0.04) / 7 ≈ 15.0 > 3² although exp(-7.5) ≠ 0.
    assert summed[7, 17].abs().max() == 0 and summed[7, 14].abs().max() > 0


@pytest.mark.parametrize("renderer", [render, render_dense])
def test_two_gaussians_composite_front_to_back_in_both_orders(renderer):
    # Both centred on pixel (4, 4) (centre 4.5, 4.5): there α = opacity exactly.
    cov = [[3.0, 0.0], [0.0, 3.0]]
    c1, c2, bg = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], torch.tensor([1.0, 1.0, 1.0], dtype=D)
    a1, a2 = 0.6, 0.5
    for (front, a_f), (back, a_b) in [((c1, a1), (c2, a2)), ((c2, a2), (c1, a1))]:
        s = _splats([[4.5, 4.5]] * 2, [cov, cov], [front, back], [a_f, a_b])
        image, _ = renderer(s, 9, 9, mode="alpha", background=bg)
        front_t, back_t = torch.tensor(front, dtype=D), torch.tensor(back, dtype=D)
        # C = α1 c1 + (1 - α1) α2 c2 + (1 - α1)(1 - α2) bg
        expected = a_f * front_t + (1 - a_f) * a_b * back_t + (1 - a_f) * (1 - a_b) * bg
        assert torch.allclose(image[4, 4], expected)
    # The sum rasteriser ignores order: α1 c1 + α2 c2.
    s = _splats([[4.5, 4.5]] * 2, [cov, cov], [c1, c2], [a1, a2])
    assert torch.allclose(
        renderer(s, 9, 9, mode="sum")[0][4, 4], torch.tensor([a1, 0.0, a2], dtype=D)
    )


@pytest.mark.parametrize("renderer", [render, render_dense])
def test_alpha_clamp_skip_and_early_stop(renderer):
    cov = [[2.0, 0.0], [0.0, 2.0]]
    red, green, blue = [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]
    # Opacity 0.999 is clamped to α = 0.99; the second (0.98) leaves T = 0.01 · 0.02 = 2e-4; the
    # third (0.9) would take T to 2e-5 < 1e-4, so 3DGS stops before it: blue never shows.
    s = _splats([[3.5, 3.5]] * 3, [cov] * 3, [red, green, blue], [0.999, 0.98, 0.9])
    image, acc = renderer(s, 7, 7, mode="alpha")
    assert torch.allclose(image[3, 3], torch.tensor([ALPHA_MAX, 0.01 * 0.98, 0.0], dtype=D))
    assert acc[3, 3].item() == pytest.approx(1 - 0.01 * 0.02)  # T_final = 2e-4 (the stop value)
    # α < 1/255 is skipped: opacity 0.003 adds nothing, not even a tiny tint.
    faint = _splats([[3.5, 3.5]], [cov], [red], [0.003])
    assert renderer(faint, 7, 7, mode="alpha")[0].abs().max() == 0
    assert renderer(faint, 7, 7, mode="sum")[0][3, 3, 0].item() == pytest.approx(0.003)


@pytest.mark.parametrize("mode", ["sum", "alpha"])
def test_tiled_matches_dense(mode):
    g = torch.Generator().manual_seed(0)
    n, height, width = 60, 29, 37  # not multiples of the tile: the last tiles are cropped
    means = torch.rand(n, 2, generator=g) * torch.tensor([width + 10.0, height + 10.0]) - 5
    A = torch.randn(n, 2, 2, generator=g) * 2
    covs = A @ A.transpose(1, 2) + 0.3 * torch.eye(2)
    s = make_splats(
        means, covs, torch.rand(n, 3, generator=g), torch.rand(n, generator=g) * 0.3 + 0.7
    )
    s.radii[:3] = 0  # culled splats are not drawn by either
    bg = torch.tensor([0.2, 0.4, 0.6])
    dense, dense_acc = render_dense(s, height, width, mode=mode, background=bg)
    for tile in (4, 8, 16):
        tiled, tiled_acc = render(s, height, width, mode=mode, background=bg, tile=tile)
        assert tiled.shape == (height, width, 3)
        assert torch.allclose(tiled, dense, atol=1e-5)
        assert torch.allclose(tiled_acc, dense_acc, atol=1e-5)


def test_no_splats_gives_background():
    empty = make_splats(torch.zeros(0, 2), torch.zeros(0, 2, 2), torch.zeros(0, 3), torch.zeros(0))
    bg = torch.tensor([0.5, 0.25, 1.0])
    image, acc = render(empty, 8, 10, background=bg)
    assert torch.equal(image, bg.expand(8, 10, 3)) and acc.abs().max() == 0


@pytest.mark.parametrize("mode", ["sum", "alpha"])
def test_gradients_match_finite_differences(mode):
    # Three overlapping splats on a 12x10 image, float64. Splats parameterised by a Cholesky-like
    # factor so every perturbed covariance stays valid; a 10σ cutoff keeps the (tiny) ellipse
    # discontinuity out of the finite differences.
    means = torch.tensor([[4.2, 3.9], [6.1, 5.3], [5.0, 4.4]], dtype=D, requires_grad=True)
    factors = torch.tensor(
        [[1.5, 0.3, 1.1], [1.2, -0.4, 1.6], [2.0, 0.1, 0.9]], dtype=D, requires_grad=True
    )
    colors = torch.tensor(
        [[0.9, 0.1, 0.2], [0.2, 0.8, 0.3], [0.1, 0.3, 0.9]], dtype=D, requires_grad=True
    )
    opacities = torch.tensor([0.7, 0.6, 0.5], dtype=D, requires_grad=True)

    def f(means, factors, colors, opacities):
        L = torch.zeros(3, 2, 2, dtype=D)
        L = L.index_put(
            (torch.arange(3), torch.tensor([0] * 3), torch.tensor([0] * 3)), factors[:, 0]
        )
        L = L.index_put(
            (torch.arange(3), torch.tensor([1] * 3), torch.tensor([0] * 3)), factors[:, 1]
        )
        L = L.index_put(
            (torch.arange(3), torch.tensor([1] * 3), torch.tensor([1] * 3)), factors[:, 2]
        )
        s = make_splats(means, L @ L.transpose(1, 2), colors, opacities, sigma_cutoff=10.0)
        bg = torch.tensor([0.3, 0.3, 0.3], dtype=D)
        return render(s, 10, 12, mode=mode, background=bg, sigma_cutoff=10.0, tile=4)[0]

    assert torch.autograd.gradcheck(f, (means, factors, colors, opacities), eps=1e-6, atol=1e-7)


def _camera_on_x_axis(size=16) -> Camera:
    R, t = look_at(torch.tensor([4.0, 0.0, 0.0], dtype=D), torch.zeros(3, dtype=D))
    return Camera(20.0, 20.0, size / 2, size / 2, size, size, R, t)


def _two_gaussians(x_front, x_back, dtype=D) -> Gaussians3D:
    """A red Gaussian at x = x_front and a blue one at x = x_back, on the camera's optical axis."""
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=dtype)
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    return Gaussians3D(
        means=torch.tensor([[x_front, 0, 0], [x_back, 0, 0]], dtype=dtype),
        log_scales=torch.full((2, 3), math.log(0.3), dtype=dtype),
        quats=quats,
        opacity_logits=torch.logit(torch.tensor([0.7, 0.7], dtype=dtype)),
        sh_dc=rgb_to_sh0(rgb)[:, None],
        sh_rest=torch.zeros(2, 0, 3, dtype=dtype),
    )


def test_3d_render_sorts_by_depth_not_by_index():
    cam = _camera_on_x_axis()  # camera at x = 4 looking towards -x: larger x is nearer
    red_front = render_gaussians_3d(_two_gaussians(0.5, -0.5), cam).image
    blue_front = render_gaussians_3d(_two_gaussians(-0.5, 0.5), cam).image
    centre = (7, 7)  # pixel centre (7.5, 7.5), next to the principal point (8, 8)
    assert red_front[centre][0] > red_front[centre][2]
    assert blue_front[centre][2] > blue_front[centre][0]
    # Same depths, listed in the other order: the same picture.
    g = _two_gaussians(0.5, -0.5)
    swapped = g.replace(**{k: v.flip(0) for k, v in g.tensors().items()})
    assert torch.allclose(render_gaussians_3d(swapped, cam).image, red_front)


def test_3d_render_culls_behind_near_plane():
    cam = _camera_on_x_axis()
    behind = _two_gaussians(5.0, 4.1)  # both behind or inside the near plane (depth -1, -0.1)
    out = render_gaussians_3d(behind, cam, background=torch.ones(3, dtype=D))
    assert len(out.visible) == 0 and torch.equal(out.image, torch.ones(16, 16, 3, dtype=D))


def test_3d_gradients_match_finite_differences():
    cam = _camera_on_x_axis(size=10)
    g = _two_gaussians(0.4, -0.3)
    g.quats = torch.tensor([[0.9, 0.1, -0.2, 0.3], [0.8, -0.3, 0.1, 0.2]], dtype=D)
    g.means = g.means + torch.tensor([[0.0, 0.05, -0.1], [0.0, -0.08, 0.06]], dtype=D)
    g.sh_rest = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=D) * 0.3
    names = list(g.tensors())
    inputs = tuple(t.clone().requires_grad_() for t in g.tensors().values())

    def f(*tensors):
        return render_gaussians_3d(Gaussians3D(**dict(zip(names, tensors))), cam).image

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)
