"""P50's "done when" checks (``python -m labkit.done p50``) and the constants they are held to.

(a) the 2D fit and (b) the 3D fit reach their PSNR / SSIM within a CPU budget; (c) the
rasterisers' and the EWA projection's gradients match finite differences; (d) the tiled
rasteriser draws what the dense reference draws; (e) a fit stopped mid-way and resumed is
bitwise the fit that ran straight. The fits are runs of :func:`labkit.splatting.task.run`.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from labkit.splatting.cameras import Camera, look_at, project_covariances
from labkit.splatting.gaussians import Gaussians2D, Gaussians3D
from labkit.splatting.rasterise import make_splats, render, render_dense, render_gaussians_3d
from labkit.splatting.task import run
from labkit.utils.checks import Check
from labkit.utils.config import apply_overrides, load_config

# (a) The 2D config with trainer.max_steps=500 (the means' rate decays over those 500 steps).
# Measured (one thread, load 3): seed 0 32.70 dB / SSIM 0.963 / 41 CPU-s, seed 1 32.45 / 0.962,
# seed 2 32.14 / 0.958; the thresholds leave ~0.6 dB below the worst seed, and 4x the time.
IMAGE_STEPS, IMAGE_PSNR, IMAGE_SSIM, IMAGE_CPU_S = 500, 31.5, 0.95, 180.0
# (b) The 3D config with trainer.max_steps=1000, held-out views. Measured (seed 0, one thread,
# load 3): 32.35 dB, SSIM 0.986, 69 CPU-s (without densification 30.4 dB: inside the margin too).
SCENE_STEPS, SCENE_PSNR, SCENE_SSIM, SCENE_CPU_S = 1000, 28.0, 0.96, 600.0


def _config(name: str, *overrides: str) -> dict:
    return apply_overrides(load_config(name), list(overrides))


def _check_fit(name: str, label: str, steps: int, psnr: float, ssim: float, cpu_s: float) -> Check:
    start = time.perf_counter()
    cfg = _config(name, f"trainer.max_steps={steps}", "trainer.eval_every=0")
    summary = run(cfg, None, progress=False).summary
    got_psnr, got_ssim, got_cpu = summary["eval/psnr"], summary["eval/ssim"], summary["cpu_time_s"]
    measured = (
        f"PSNR {got_psnr:.2f} dB, SSIM {got_ssim:.4f}, {summary['eval/num_gaussians']:.0f} "
        f"Gaussians; {got_cpu:.0f} CPU-s, {summary['wall_time_s']:.0f} s wall, "
        f"{torch.get_num_threads()} thread(s)"
    )
    passed = got_psnr >= psnr and got_ssim >= ssim and got_cpu <= cpu_s
    target = f"PSNR >= {psnr:g} dB, SSIM >= {ssim:g} at {steps:,} steps, <= {cpu_s:.0f} CPU-s"
    return Check(label, target, measured, passed, time.perf_counter() - start)


def check_p50_image() -> Check:
    """(a) 2D: astronaut at 128x128 with 2,000 Gaussians reaches the stated PSNR and SSIM."""
    return _check_fit(
        "p50_splat2d", "2D image fit", IMAGE_STEPS, IMAGE_PSNR, IMAGE_SSIM, IMAGE_CPU_S
    )


def check_p50_scene() -> Check:
    """(b) 3D: the synthetic scene reaches the stated PSNR and SSIM on held-out views."""
    return _check_fit(
        "p50_splat3d", "3D scene, held-out views", SCENE_STEPS, SCENE_PSNR, SCENE_SSIM, SCENE_CPU_S
    )


def _gradcheck_cases() -> dict[str, tuple[Any, tuple[Tensor, ...]]]:
    """Tiny float64 cases: name → (function, inputs). 2D: three overlapping Gaussians on 12x10
    pixels through scale/angle → covariance → splats → tiles, with a 10σ cutoff so the (tiny)
    ellipse edge stays out of the finite differences. 3D: two Gaussians in front of a camera,
    SH degree 1. EWA: ``Σ' = J W Σ Wᵀ Jᵀ + 0.3 I`` w.r.t. Σ and the camera-space mean."""
    D = torch.float64
    g2 = Gaussians2D(
        means=torch.tensor([[4.2, 3.9], [6.1, 5.3], [5.0, 4.4]], dtype=D),
        log_scales=torch.tensor([[0.3, -0.1], [0.1, 0.4], [0.6, -0.2]], dtype=D),
        angles=torch.tensor([0.3, 1.2, -0.7], dtype=D),
        colors=torch.tensor([[0.9, 0.1, 0.2], [0.2, 0.8, 0.3], [0.1, 0.3, 0.9]], dtype=D),
        opacity_logits=torch.tensor([0.8, 0.4, 0.0], dtype=D),
    )
    background = torch.tensor([0.3, 0.3, 0.3], dtype=D)

    def render_2d(mode: str):
        def f(*tensors: Tensor) -> Tensor:
            g = Gaussians2D(*tensors)
            splats = make_splats(g.means, g.covariances(), g.colors, g.opacities, sigma_cutoff=10)
            return render(splats, 10, 12, mode, background, sigma_cutoff=10, tile=4)[0]

        return f

    R, t = look_at(torch.tensor([4.0, 0.0, 0.0], dtype=D), torch.zeros(3, dtype=D))
    camera = Camera(20.0, 20.0, 5.0, 5.0, 10, 10, R, t)
    generator = torch.Generator().manual_seed(0)
    g3 = Gaussians3D(
        means=torch.tensor([[0.4, 0.05, -0.1], [-0.3, -0.08, 0.06]], dtype=D),
        log_scales=torch.full((2, 3), math.log(0.3), dtype=D),
        quats=torch.tensor([[0.9, 0.1, -0.2, 0.3], [0.8, -0.3, 0.1, 0.2]], dtype=D),
        opacity_logits=torch.logit(torch.tensor([0.7, 0.7], dtype=D)),
        sh_dc=torch.tensor([[[1.6, -1.7, -1.7]], [[-1.7, -1.7, 1.6]]], dtype=D),
        sh_rest=torch.randn(2, 3, 3, generator=generator, dtype=D) * 0.3,
    )

    def render_3d(*tensors: Tensor) -> Tensor:
        return render_gaussians_3d(Gaussians3D(*tensors), camera).image

    A = torch.randn(3, 3, 3, generator=generator, dtype=D)
    covariances = A @ A.transpose(1, 2) + 0.1 * torch.eye(3, dtype=D)  # [3, 3, 3]
    points = torch.tensor([[0.1, -0.2, 3.0], [0.4, 0.3, 2.5], [-0.3, 0.1, 4.0]], dtype=D)

    def ewa(cov: Tensor, pts: Tensor) -> Tensor:
        return project_covariances(cov, pts, camera)

    def leaves(*tensors: Tensor) -> tuple[Tensor, ...]:
        return tuple(x.detach().clone().requires_grad_() for x in tensors)

    return {
        "2D sum": (render_2d("sum"), leaves(*g2.tensors().values())),
        "2D alpha": (render_2d("alpha"), leaves(*g2.tensors().values())),
        "3D alpha (SH 1)": (render_3d, leaves(*g3.tensors().values())),
        "EWA projection": (ewa, leaves(covariances, points)),
    }


def check_p50_gradients() -> Check:
    """(c) Rasteriser (2D sum/alpha, 3D) and EWA projection gradients match finite differences."""
    start = time.perf_counter()
    results = {}
    for name, (f, inputs) in _gradcheck_cases().items():
        try:
            results[name] = torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)
        except RuntimeError:  # gradcheck raises on a mismatch, naming the entry
            results[name] = False
    measured = "; ".join(f"{name}: {'agrees' if ok else 'DIFFERS'}" for name, ok in results.items())
    return Check(
        "gradients vs finite differences",
        "torch.autograd.gradcheck, float64, eps 1e-6, atol 1e-6",
        measured,
        all(results.values()),
        time.perf_counter() - start,
    )


def check_p50_tiled() -> Check:
    """(d) The tiled rasteriser draws what the dense reference draws (both modes, 3 tile sizes)."""
    start = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    n, height, width = 200, 45, 61  # not multiples of the tiles: the last ones are cropped
    means = torch.rand(n, 2, generator=g) * torch.tensor([width + 10.0, height + 10.0]) - 5
    A = torch.randn(n, 2, 2, generator=g) * 2
    covariances = A @ A.transpose(1, 2) + 0.3 * torch.eye(2)
    colors, opacities = torch.rand(n, 3, generator=g), torch.rand(n, generator=g) * 0.3 + 0.7
    splats = make_splats(means, covariances, colors, opacities)
    background = torch.tensor([0.2, 0.4, 0.6])
    worst = 0.0
    for mode in ("sum", "alpha"):
        dense, dense_acc = render_dense(splats, height, width, mode, background)
        for tile in (4, 8, 16):
            tiled, tiled_acc = render(splats, height, width, mode, background, tile=tile)
            diff = max(
                (tiled - dense).abs().max().item(), (tiled_acc - dense_acc).abs().max().item()
            )
            worst = max(worst, diff)
    return Check(
        "tiled == dense",
        "max |tiled - dense| <= 1e-5 (float32)",
        f"{n} splats on {width}x{height}, sum and alpha, tiles 4/8/16: max diff {worst:.1e}",
        worst <= 1e-5,
        time.perf_counter() - start,
    )


TINY_2D = ["data.size=32", "model.num_gaussians=150", "densify.enabled=true", "densify.start=10",
           "densify.stop=30", "densify.every=10", "densify.grad_threshold=0",
           "densify.max_gaussians=220", "trainer.max_steps=40", "trainer.eval_every=20"]  # fmt: skip
TINY_3D = ["data.size=24", "data.num_train=4", "data.num_test=2", "data.num_points=300",
           "data.supersample=1", "densify.enabled=true", "densify.start=10", "densify.stop=30",
           "densify.every=10", "densify.grad_threshold=0", "densify.max_gaussians=400",
           "trainer.max_steps=40", "trainer.eval_every=20"]  # fmt: skip


def resume_matches(cfg: dict, stop_at: int, root: Path) -> dict[str, bool]:
    """A straight run of ``cfg`` against one stopped after ``stop_at`` steps and resumed from its
    checkpoint: are losses, Gaussians, Adam moments and the final evaluation identical?"""
    straight = run(cfg, root / "straight", progress=False)
    part = run(cfg, root / "parts", progress=False, stop_after=stop_at)
    rest = run(cfg, root / "parts", progress=False, resume_from=part.details["last_checkpoint"])
    a, b = straight.setup, rest.setup

    def same(x: dict, y: dict) -> bool:
        return x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)

    return {
        "losses": straight.details["losses"] == part.details["losses"] + rest.details["losses"],
        "Gaussians": same(a.gaussians.state_dict(), b.gaussians.state_dict()),
        "Adam": same(a.optimizer.state_dict(), b.optimizer.state_dict()),
        "eval": straight.details["eval_history"][-1] == rest.details["eval_history"][-1],
    }


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, Tensor):
        return isinstance(y, Tensor) and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_equal(u, v) for u, v in zip(x, y))
    return x == y


def check_p50_resume() -> Check:
    """(e) A fit stopped mid-way (between densification rounds) and resumed is bitwise the same."""
    start = time.perf_counter()
    parts = []
    with tempfile.TemporaryDirectory(prefix="p50_done_") as tmp:
        for name, overrides in (("p50_splat2d", TINY_2D), ("p50_splat3d", TINY_3D)):
            same = resume_matches(_config(name, *overrides), 15, Path(tmp) / name)
            shown = ", ".join(f"{k} {'identical' if ok else 'DIFFER'}" for k, ok in same.items())
            parts.append((name, all(same.values()), shown))
    return Check(
        "exact resume",
        "stop at 15 + resume = 40 straight (2D and 3D, densifying)",
        "; ".join(f"{name}: {shown}" for name, _, shown in parts),
        all(ok for _, ok, _ in parts),
        time.perf_counter() - start,
    )


DONE_CHECKS = [
    check_p50_gradients,
    check_p50_tiled,
    check_p50_resume,
    check_p50_image,
    check_p50_scene,
]
