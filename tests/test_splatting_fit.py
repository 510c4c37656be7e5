"""Fitting: tiny 2D and 3D fits learn and are deterministic; densification keeps Adam consistent."""

import torch

from labkit.splatting.densify import (
    DensifyConfig,
    GradientStats,
    densify_and_prune,
    replace_in_adam,
)
from labkit.splatting.gaussians import gaussians_2d_from_image
from labkit.splatting.loop import fit_2d, fit_3d
from labkit.splatting.rasterise import render_gaussians_2d
from labkit.splatting.scene import make_scene_data


def _image(size=24) -> torch.Tensor:
    """A smooth colourful test pattern [size, size, 3]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([x, y, 0.5 + 0.4 * torch.sin(6 * x) * torch.cos(4 * y)], -1)


def test_fit_2d_learns_and_is_deterministic():
    image = _image()

    def run():
        gen = torch.Generator().manual_seed(3)
        return fit_2d(image, 60, 60, eval_every=20, render_steps=(0, 60), generator=gen)

    result = run()
    assert result.loss[-1] < 0.3 * result.loss[0]
    assert result.psnr[-1] > result.psnr[0] and result.eval_steps == [20, 40, 60]
    assert set(result.renders) == {0, 60} and result.renders[60].shape == (24, 24, 3)
    assert result.loss == run().loss  # same seed, same numbers


def test_fit_2d_with_densification_grows_to_the_cap():
    densify = DensifyConfig(
        start=10,
        stop=30,
        every=10,
        grad_threshold=0.0,
        scale_threshold=2.0,
        max_gaussians=80,
        conserve_sum=True,
    )
    result = fit_2d(_image(), 30, 40, densify=densify, eval_every=10)
    assert result.num_gaussians[0] > 30 and result.num_gaussians[-1] == 80
    assert result.loss[-1] < result.loss[0]


def test_fit_3d_learns():
    data = make_scene_data(size=24, num_train=4, num_test=2, num_points=300, supersample=1)
    densify = DensifyConfig(
        start=10, stop=20, every=10, grad_threshold=0.0, scale_threshold=0.05, max_gaussians=400
    )
    result = fit_3d(data, 30, eval_every=15, densify=densify, render_steps=(30,))
    first_epoch, last_epoch = sum(result.loss[:4]), sum(result.loss[-4:])  # each view once
    assert last_epoch < 0.8 * first_epoch
    assert result.psnr[-1] > result.psnr[0] and result.num_gaussians[-1] > result.num_gaussians[0]
    assert result.renders[30].shape == (24, 24, 3)


def test_replace_in_adam_keeps_moments_of_kept_rows():
    old = torch.randn(4, 2, requires_grad=True)
    opt = torch.optim.Adam([{"params": [old], "name": "means"}], lr=0.1)
    old.grad = torch.randn(4, 2)
    opt.step()
    moments = opt.state[old]["exp_avg"].clone()
    keep = torch.tensor([True, False, True, True])
    new = torch.cat([old.detach()[keep], torch.zeros(2, 2)]).requires_grad_()
    replace_in_adam(opt, {"means": new}, keep, num_added=2)
    state = opt.state[new]
    assert opt.param_groups[0]["params"][0] is new and old not in opt.state
    assert (
        torch.equal(state["exp_avg"][:3], moments[keep]) and state["exp_avg"][3:].abs().sum() == 0
    )
    new.grad = torch.ones(5, 2)
    opt.step()  # the optimiser still works on the resized tensor


def test_clone_split_prune_counts_and_conserve_sum():
    gen = torch.Generator().manual_seed(0)
    image = _image(16)
    g = gaussians_2d_from_image(image, 6, gen).requires_grad_()
    with torch.no_grad():
        g.log_scales[:] = torch.tensor([0.0, 0.0, 0.0, 1.5, 1.5, 0.0])[:, None]  # 3, 4 large
        g.opacity_logits[5] = -10.0  # opacity 4.5e-5: pruned
    opt = torch.optim.Adam([{"params": [t], "name": k} for k, t in g.tensors().items()])
    stats = GradientStats(6)
    stats.add(torch.tensor([[1.0, 0], [1.0, 0], [0, 0], [1.0, 0], [0.0, 0.1], [1.0, 0]]))
    config = DensifyConfig(grad_threshold=0.5, scale_threshold=2.0, conserve_sum=True)
    before = render_gaussians_2d(g, 16, 16)
    new = densify_and_prune(g, opt, stats, config, gen)
    # 0, 1 cloned (small, large grad); 3 split into two (large); 4 kept (small grad); 5 pruned.
    assert len(new) == 6 - 1 + 2 - 1 + 2
    assert all(group["params"][0] is new.tensors()[group["name"]] for group in opt.param_groups)
    # Clones share their parent's opacity in the sum: the picture of 0 and 1 is unchanged.
    parents = g.replace(**{k: v[[0, 1]] for k, v in g.tensors().items()})
    clones = new.replace(**{k: v[[0, 1, 4, 5]] for k, v in new.tensors().items()})
    assert torch.allclose(
        render_gaussians_2d(clones, 16, 16), render_gaussians_2d(parents, 16, 16), atol=1e-6
    )
    assert before.shape == (16, 16, 3)


def test_densify_respects_the_budget():
    gen = torch.Generator().manual_seed(0)
    g = gaussians_2d_from_image(_image(16), 10, gen).requires_grad_()
    opt = torch.optim.Adam([{"params": [t], "name": k} for k, t in g.tensors().items()])
    stats = GradientStats(10)
    stats.add(torch.rand(10, 2, generator=gen) + 1)
    new = densify_and_prune(g, opt, stats, DensifyConfig(grad_threshold=0.0, max_gaussians=13), gen)
    assert len(new) == 13
