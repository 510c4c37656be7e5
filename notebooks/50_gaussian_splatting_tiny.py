# ---
# jupyter:
#   kernelspec:
#     display_name: Python (labkit)
#     language: python
#     name: labkit
# ---

# %% [markdown]
# # P50 — Tiny Gaussian splatting: an image, then a scene, made of Gaussians
#
# 3D Gaussian Splatting (Kerbl et al. 2023, "3D Gaussian Splatting for Real-Time Radiance Field
# Rendering") represents a scene as a few million coloured, semi-transparent 3D Gaussians. To
# draw a view, each Gaussian is projected to a 2D ellipse on the image (a "splat"), the splats are
# sorted by depth and alpha-composited front to back. Every step is differentiable, so the
# Gaussians' positions, shapes, opacities and colours are fitted to photos by gradient descent,
# and the set grows where detail is missing (densification). GaussianImage (Zhang et al. 2024)
# does the same for one image with 2D Gaussians and an order-free sum. This notebook builds both
# at toy size on the CPU, from the pieces in `labkit.splatting`:
#
# | piece | where it lives |
# |---|---|
# | Σ = R S Sᵀ Rᵀ, quaternions, spherical-harmonics colour, `Gaussians2D` / `Gaussians3D`, initialisers | `labkit.splatting.gaussians` |
# | pinhole cameras, orbits, the projection Jacobian, EWA projection Σ' = J W Σ Wᵀ Jᵀ | `labkit.splatting.cameras` |
# | splats, tiles, order-free sum and front-to-back alpha compositing (dense and tiled) | `labkit.splatting.rasterise` |
# | a ray-cast scene with exact ground truth, "SfM" points | `labkit.splatting.scene` |
# | target photos from `skimage.data` (centre square, area-averaged) | `labkit.splatting.images` |
# | PSNR, SSIM | `labkit.splatting.metrics` |
# | clone / split / prune with Adam-state surgery | `labkit.splatting.densify` |
# | one step of a fit (render, the loss (1 - λ) L1 + λ (1 - SSIM), Adam, densify): `ImageFit`, `SceneFit` | `labkit.splatting.fit` |
# | the loop around it: `fit_2d`, `fit_3d` in memory, the same `run_fit` for the lab run | `labkit.splatting.loop` |
# | the lab run (`python -m labkit.train p50_splat2d`): config, checkpoints, task, done checks | `labkit.splatting.config`, `labkit.splatting.checkpoints`, `labkit.splatting.task`, `labkit.splatting.done` |
#
# **Objective.** Write Σ = R S Sᵀ Rᵀ and say why the covariance is not learned directly; derive
# the EWA projection of a 3D Gaussian and its Jacobian; composite a few splats at a pixel by hand
# and say why the order matters (and why GaussianImage's sum does not need one); explain what
# tiling buys; say when a Gaussian is cloned, split or pruned; read PSNR and SSIM; recognise the
# usual failures (too few Gaussians and no densification, a positional learning rate too high,
# compositing in the wrong order, opacity starting at 1).
#
# **Done when** `python -m labkit.done p50` passes: (a) the 2D config (astronaut at 128 × 128,
# 2,000 Gaussians) reaches PSNR ≥ 31.5 dB and SSIM ≥ 0.95 in 500 steps (≤ 180 CPU-s); (b) the
# 3D config reaches PSNR ≥ 28 dB and SSIM ≥ 0.96 on held-out views in 1,000 steps (≤ 600
# CPU-s); (c) the rasterisers' (2D sum and alpha, 3D) and the EWA projection's gradients match
# finite differences; (d) the tiled rasteriser draws what the dense reference draws; (e) a fit
# stopped between densification rounds and resumed is bitwise the fit that ran straight.
#
# **Run time** ("Run all", defaults; one torch thread, the lab's shared 2-core machine): 3 min
# 9 s measured with papermill at load ≈ 4.3 (the other core busy), 3 min 12 s at load ≈ 2;
# about 70 s of it the 2D fits (sections 3 and 4), 45 s the 3D fit (section 7), 50 s the short
# runs of section 8. Smoke setting (`LABKIT_SMOKE=1`, what `make test` runs): 12-30 s. Each
# section's time is printed at the end. Every "Run all" writes its files (the orbit GIF) into a
# fresh `runs/p50_splat_notebook/<time>_notebook_s<seed>/`; the parameters are checked first.
#
# **Reference numbers** — see "Reference numbers" at the end (measured on the lab's CPU).
#
# Headless equivalents: `python -m labkit.train p50_splat2d` (the 2D fit, with TensorBoard and
# checkpoints in `runs/p50_splat2d/`) and `python -m labkit.train p50_splat3d` (the scene).
# Rerun this notebook with other parameters:
# `make rerun NB=50_gaussian_splatting_tiny PARAMS="-p steps_2d 1000 -p steps_3d 1000"`.

# %% tags=["parameters"]
smoke = False  # True: the tiny setting `make test` uses (set LABKIT_SMOKE=1 for the same)
seed = 0
image_name = "astronaut"  # any colour image of skimage.data: astronaut, coffee, chelsea, rocket
image_size = 128  # the 2D target is image_size x image_size pixels
num_gaussians = 2000  # N of the 2D fit
steps_2d = 300  # Adam steps of the 2D fit (one full render each)
densify_from = 500  # section 4: start of the fits with and without densification
scene_size = 64  # the 3D scene's views are scene_size x scene_size pixels
steps_3d = 400  # Adam steps of the 3D fit (one training view each)
failure_steps = 120  # each short run of section 8
orbit_frames = 24  # frames of the orbit around the fitted scene

# %%
import inspect
import math
import os
import tempfile
import time
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Image, display
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch, Rectangle

import labkit
from labkit.splatting.cameras import (
    orbit_cameras,
    project_covariances,
    project_points,
    projection_jacobian,
    world_to_camera,
)
from labkit.splatting.densify import DensifyConfig, densify_and_prune
from labkit.splatting.fit import LR_3D, evaluate_3d, image_loss
from labkit.splatting.gaussians import (
    Gaussians2D,
    covariance_from_scale_rotation,
    gaussians_2d_from_image,
    gaussians_3d_from_points,
    quaternion_to_rotation,
    random_gaussians_3d,
    rotation_matrix_2d,
    sh_to_rgb,
)
from labkit.splatting.images import load_image
from labkit.splatting.loop import fit_2d, fit_3d
from labkit.splatting.metrics import psnr, ssim
from labkit.splatting.rasterise import (
    Splats,
    make_splats,
    render,
    render_dense,
    render_gaussians_2d,
    render_gaussians_3d,
    tile_pairs,
)
from labkit.splatting.scene import make_scene_data, render_scene
from labkit.utils.claims import claim
from labkit.utils.exercise import Case, check_exercise
from labkit.utils.notebook import Param, check_parameters, notebook_run_dir

check_parameters(  # papermill's -p values, checked before anything runs: one clear message
    dict(smoke=smoke, seed=seed, image_name=image_name, image_size=image_size,
         num_gaussians=num_gaussians, steps_2d=steps_2d, densify_from=densify_from,
         scene_size=scene_size, steps_3d=steps_3d, failure_steps=failure_steps,
         orbit_frames=orbit_frames),
    dict(smoke=Param(bool), seed=Param(int, low=0, high=2**32 - 1),
         image_name=Param(str, choices=("astronaut", "coffee", "chelsea", "rocket"),
                          other="another colour image of skimage.data"),
         image_size=Param(int, low=16, high=512),  # below 16 px the SSIM window does not fit
         num_gaussians=Param(int, low=30), steps_2d=Param(int, low=6), densify_from=Param(int, low=30),
         scene_size=Param(int, low=16, high=256), steps_3d=Param(int, low=10),
         failure_steps=Param(int, low=1), orbit_frames=Param(int, low=1)),
)  # fmt: skip

smoke = smoke or os.environ.get("LABKIT_SMOKE") == "1"
if smoke:
    image_size, num_gaussians, steps_2d, densify_from = 32, 120, 20, 40
    scene_size, steps_3d, failure_steps, orbit_frames = 32, 20, 8, 4
ROOT = Path(labkit.__file__).resolve().parents[1]
# A fresh folder for every run of the notebook: runs/p50_splat_notebook/<time>_notebook_s<seed>
RUNS = notebook_run_dir("p50_splat_notebook", seed, root=Path(tempfile.mkdtemp()) if smoke else ROOT / "runs")
torch.set_num_threads(1)  # the rasterisers are small CPU ops: threads only add hand-off cost
torch.manual_seed(seed)
started = time.perf_counter()
timings = {}  # section -> seconds, printed at the end
print(f"smoke={smoke}; 2D: {image_size}² px, {num_gaussians} Gaussians, {steps_2d} steps; "
      f"3D: {scene_size}² px views, {steps_3d} steps; files in {RUNS}")  # fmt: skip


def show(ax, image, title=""):
    """An ``[H, W, 3]`` image in [0, 1] on ``ax``, titled, without axes."""
    ax.imshow(image.detach().clamp(0, 1).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def gen(offset=0):
    return torch.Generator().manual_seed(seed + offset)


# %% [markdown]
# ## 1. The pipeline
# A 3D fit starts from the sparse point cloud that structure-from-motion (COLMAP) triangulates
# from the photos: one small isotropic Gaussian per point. Every step renders one training view
# (project, sort and tile, composite), compares it with the photo, and moves every Gaussian by
# Adam; every few hundred steps the set is densified and pruned. The 2D fit (bottom row) skips
# what a single image does not need: no camera, no depth, no sort.

# %%
fig, ax = plt.subplots(figsize=(11, 4.2))
ax.set(xlim=(0, 11.2), ylim=(0, 4.6))
ax.axis("off")
stages = {
    "sfm": (0.1, 2.9, "SfM points\n(COLMAP; here: noisy\nsurface samples)"),
    "gauss": (2.3, 2.9, "3D Gaussians\nμ, s, q, opacity, SH\n(one per point)"),
    "project": (4.5, 2.9, "project (EWA)\nμ' = π(Wμ + t)\nΣ' = J W Σ Wᵀ Jᵀ"),
    "tile": (6.7, 2.9, "sort by depth,\ntile: (tile, splat)\npairs, sorted keys"),
    "composite": (8.9, 2.9, "α-composite front\nto back per pixel\nC = Σ cᵢ αᵢ Tᵢ"),
    "loss": (8.9, 1.2, "loss vs the photo\n(1-λ) L1 + λ (1-SSIM)"),
    "adam": (4.5, 1.2, "backward, Adam step\non every parameter"),
    "densify": (1.9, 1.2, "every 100 steps:\nclone / split / prune"),
}
for x, y, text in stages.values():
    ax.add_patch(
        FancyBboxPatch((x, y), 2.0, 1.2, boxstyle="round,pad=0.05", fc="#eef3fb", ec="#4a6fa5")
    )
    ax.text(x + 1.0, y + 0.6, text, ha="center", va="center", fontsize=8)


def arrow(start, end, **style):
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=13, color="#4a6fa5", **style)
    )


for a, b in [("sfm", "gauss"), ("gauss", "project"), ("project", "tile"), ("tile", "composite")]:
    arrow((stages[a][0] + 2.05, 3.5), (stages[b][0] - 0.05, 3.5))
arrow((9.9, 2.85), (9.9, 2.45))  # composite -> loss
arrow((8.85, 1.8), (6.55, 1.8))  # loss -> adam
arrow((4.45, 1.8), (3.95, 1.8))  # adam -> densify
arrow((3.0, 2.45), (3.0, 2.85))  # densify -> gaussians: the next step starts from them
ax.text(5.6, 0.55, "2D (GaussianImage): image → 2D Gaussians μ, s, θ, c, o → splats (no camera) → "
        "order-free sum C = Σ cᵢ αᵢ → MSE → Adam", ha="center", fontsize=8, style="italic")  # fmt: skip
ax.text(5.6, 4.4, "3D (3DGS): one training view per step", ha="center", fontsize=9, weight="bold")
plt.show()

# %% [markdown]
# ## 2. One Gaussian
# A 2D Gaussian is a mean μ (pixels), a covariance Σ, a colour c and an opacity o. Its weight at
# pixel p is $\alpha(p) = o \exp(-\tfrac12 (p-\mu)^\top \Sigma^{-1} (p-\mu))$.
#
# Σ is never learned directly: a gradient step on its entries can leave the cone of symmetric
# positive definite matrices (a negative variance, a non-invertible Σ). 3DGS (eq. 6) learns a
# scale vector s and a rotation R instead and builds
#
# $$\Sigma = R\,S\,S^\top R^\top,\qquad S = \mathrm{diag}(s),$$
#
# which is symmetric positive definite for any real parameters: its eigenvectors are R's
# columns, its eigenvalues $s_k^2$. Scales are stored as $\log s$, rotations as an angle θ (2D) or
# a quaternion normalised before use (3D), opacity as a logit: every raw number is valid.
# The rasteriser only draws a splat inside its 3σ ellipse; the square μ ± r around it
# (r = 3 √λ_max) is what decides which tiles it touches (section 6).

# %%
print(inspect.getsource(covariance_from_scale_rotation))
CANVAS = 64


def one_gaussian(sigma_x=8.0, sigma_y=3.0, theta_deg=30.0, opacity=0.8):
    """A single Gaussians2D at the canvas centre, red."""
    return Gaussians2D(
        means=torch.tensor([[CANVAS / 2, CANVAS / 2]]),
        log_scales=torch.tensor([[sigma_x, sigma_y]]).log(),
        angles=torch.tensor([math.radians(theta_deg)]),
        colors=torch.tensor([[1.0, 0.2, 0.1]]),
        opacity_logits=torch.logit(torch.tensor([opacity])),
    )


def draw_gaussian(ax, sigma_x, sigma_y, theta_deg, opacity):
    g = one_gaussian(sigma_x, sigma_y, theta_deg, opacity)
    image = render_gaussians_2d(g, CANVAS, CANVAS, mode="sum")  # [H, W, 3]
    show(
        ax, image, f"σ = ({sigma_x:.0f}, {sigma_y:.0f}) px, θ = {theta_deg:.0f}°, o = {opacity:.2f}"
    )
    (cx, cy), cov = g.means[0].tolist(), g.covariances()[0]
    # The k-σ ellipses: axes 2kσ along R's columns (y points down, so θ turns x towards y).
    for k in (1, 2, 3):
        ax.add_patch(Ellipse((cx - 0.5, cy - 0.5), 2 * k * sigma_x, 2 * k * sigma_y, angle=theta_deg,
                             fill=False, ec="white", lw=0.7, ls="-" if k < 3 else "--"))  # fmt: skip
    r = make_splats(g.means, g.covariances(), g.colors, g.opacities).radii[0].item()
    ax.add_patch(
        Rectangle((cx - r - 0.5, cy - r - 0.5), 2 * r, 2 * r, fill=False, ec="yellow", lw=0.7)
    )
    ax.set(xlim=(-0.5, CANVAS - 0.5), ylim=(CANVAS - 0.5, -0.5))
    return cov


def show_gaussian(sigma_x=8.0, sigma_y=3.0, theta_deg=30.0, opacity=0.8):
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    cov = draw_gaussian(ax, sigma_x, sigma_y, theta_deg, opacity)
    plt.show()
    print(f"Σ = [[{cov[0, 0]:.2f}, {cov[0, 1]:.2f}], [{cov[1, 0]:.2f}, {cov[1, 1]:.2f}]] px²; "
          "white: 1σ, 2σ, 3σ (dashed) ellipses; yellow: the 3σ bounding square used for tiling")  # fmt: skip


display(widgets.interactive(
    show_gaussian,
    sigma_x=widgets.FloatSlider(8.0, min=1.0, max=16.0, step=0.5, continuous_update=False),
    sigma_y=widgets.FloatSlider(3.0, min=1.0, max=16.0, step=0.5, continuous_update=False),
    theta_deg=widgets.FloatSlider(30.0, min=0.0, max=180.0, step=5.0, continuous_update=False),
    opacity=widgets.FloatSlider(0.8, min=0.05, max=0.99, step=0.05, continuous_update=False),
))  # fmt: skip
# The same drawing at a few fixed settings, so that the output exists without a widget frontend.
settings = [(8, 3, 0, 0.8), (8, 3, 30, 0.8), (8, 3, 90, 0.8), (5, 5, 0, 0.8), (8, 3, 30, 0.3)]
fig, axes = plt.subplots(1, len(settings), figsize=(2.6 * len(settings), 2.8))
for ax, setting in zip(axes, settings):
    draw_gaussian(ax, *setting)
plt.show()

# %% [markdown]
# ### Exercise 1: a covariance from a scale and a rotation
# Write `my_covariance(scales [N, d], rotations [N, d, d]) -> Σ [N, d, d]` with Σ = R S Sᵀ Rᵀ,
# for d = 2 or 3, batched (`@` multiplies the last two dimensions; `torch.diag_embed(s)` makes
# `[N, d, d]` diagonal matrices). Delete the line that binds the reference to check yours.


# %%
def my_covariance(scales, rotations):
    raise NotImplementedError  # your code: R S Sᵀ Rᵀ


def covariance_inputs(trial_seed):
    g = gen(100 + trial_seed)
    if trial_seed % 2:  # 3D: a random quaternion
        return torch.rand(5, 3, generator=g) + 0.1, quaternion_to_rotation(
            torch.randn(5, 4, generator=g)
        )
    return torch.rand(5, 2, generator=g) + 0.1, rotation_matrix_2d(torch.rand(5, generator=g) * 6.3)


covariance_cases = [
    Case((torch.tensor([[2.0, 0.5]]), torch.eye(2)[None]), "no rotation: diag(s²)"),
    Case((torch.tensor([[2.0, 0.5]]), rotation_matrix_2d(torch.tensor([math.pi / 2]))), "θ = 90°: the axes swap"),
    Case((torch.tensor([[1.0, 1.0, 1.0]]), quaternion_to_rotation(torch.tensor([[0.3, 0.1, -0.5, 0.8]]))), "isotropic: any R gives I"),
]  # fmt: skip
my_covariance = covariance_from_scale_rotation  # delete this line to check your own
passed = check_exercise(
    my_covariance, covariance_from_scale_rotation, covariance_inputs, cases=covariance_cases,
    expects="my_covariance(scales [N, d], rotations [N, d, d]) -> covariances [N, d, d]",
)  # fmt: skip

# %% [markdown]
# ## 3. Fitting an image with 2D Gaussians (GaussianImage)
# For a single image there is no depth, so GaussianImage (Zhang et al. 2024, eq. 4) drops the
# ordering and just adds the splats up:
#
# $$C(p) = \sum_i c_i\,\alpha_i(p),\qquad \alpha_i(p) = o_i \exp\!\big(-\tfrac12 (p-\mu_i)^\top \Sigma_i^{-1} (p-\mu_i)\big).$$
#
# Cheap (no sort, no transmittance), and every Gaussian covering a pixel gets a gradient from
# it. Colours are raw numbers, not squashed into [0, 1]: a Gaussian may need a negative colour to
# correct its neighbours' overlap. The Gaussians start at random pixels with the colour found
# there, sized so that about one Gaussian's worth of weight lands on each pixel (the first render
# is a blurred copy, not a dark or saturated one). The loss is the MSE (PSNR is a function of
# it); the means' learning rate decays exponentially to 5 % of its start. `fit_2d` is that loop;
# with the defaults (2,000 Gaussians, 300 steps) it gets past 30 dB, where a copy is hard to tell
# from the photo at a glance:

# %%
target = load_image(image_name, image_size)  # [H, W, 3]
print(inspect.getsource(gaussians_2d_from_image).split('"""')[-1])
t0 = time.perf_counter()
marks = sorted({0, max(1, steps_2d // 10), max(1, steps_2d // 4), steps_2d // 2, steps_2d})
fit = fit_2d(target, num_gaussians, steps_2d, eval_every=max(1, steps_2d // 20), render_steps=marks, generator=gen())  # fmt: skip
timings["2D fit"] = time.perf_counter() - t0
print(f"{num_gaussians} Gaussians × {sum(t[0].numel() for t in fit.gaussians.tensors().values())} "
      f"numbers = {sum(t.numel() for t in fit.gaussians.tensors().values()):,} parameters for "
      f"{target.numel():,} pixel values; {steps_2d} steps in {fit.seconds:.0f} s "
      f"({fit.cpu_seconds:.0f} CPU-s): PSNR {fit.psnr[-1]:.2f} dB, SSIM {fit.ssim[-1]:.3f}")  # fmt: skip
claim("the 2D fit gets past 30 dB", fit.psnr[-1] > 30, f"{fit.psnr[-1]:.2f} dB", smoke=smoke)

fig, axes = plt.subplots(1, len(marks) + 1, figsize=(2.2 * (len(marks) + 1), 2.5))
for ax, step in zip(axes, marks):
    rendered = fit.renders[step]
    show(ax, rendered, f"step {step}: {psnr(rendered, target):.1f} dB")
show(axes[-1], target, f"target {image_size}×{image_size}")
plt.show()

fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(12, 3))
ax1.plot(fit.eval_steps, fit.psnr, "o-", ms=3)
ax1.set(xlabel="step", ylabel="PSNR (dB)", title="2D fit: PSNR")
ax2.plot(fit.eval_steps, fit.ssim, "s-", ms=3, color="tab:orange")
ax2.set(xlabel="step", ylabel="SSIM", title="SSIM")
ax3.semilogy(range(1, len(fit.loss) + 1), fit.loss, color="tab:green")
ax3.set(xlabel="step", ylabel="MSE loss (log scale)", title="training loss")
fig.tight_layout()
plt.show()

# %% [markdown]
# **What the Gaussians look like.** Every fitted Gaussian's 1σ ellipse over a faded target,
# coloured by its larger scale σ_max (dark: small, yellow: large). Most are a few pixels wide;
# the large ones (yellow) lie over flat regions such as the dark background and the helmet, and
# some stretch along edges.

# %%
final = fit.gaussians
sigma_max = final.scales.max(dim=1).values  # [N] pixels
size_colour = plt.get_cmap("viridis")(
    plt.Normalize(0, float(sigma_max.quantile(0.95)))(sigma_max.numpy())
)
fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.6))
show(axes[0], fit.renders[steps_2d], f"render, {len(final)} Gaussians")
axes[1].imshow(0.3 * target.numpy() + 0.7, interpolation="nearest")
for i in range(len(final)):
    (x, y), (sx, sy) = final.means[i].tolist(), final.scales[i].tolist()
    axes[1].add_patch(Ellipse((x - 0.5, y - 0.5), 2 * sx, 2 * sy, angle=math.degrees(final.angles[i]),
                              fill=False, lw=0.5, ec=size_colour[i]))  # fmt: skip
axes[1].set_title(f"1σ ellipses; σ_max median {sigma_max.median():.1f} px, "
                  f"95 % below {sigma_max.quantile(0.95):.1f} px", fontsize=8)  # fmt: skip
axes[1].axis("off")
plt.show()

# %% [markdown]
# **PSNR and SSIM.** PSNR = 10 log₁₀(1 / MSE) for images in [0, 1]: +6 dB is half the RMS
# error; about 20 dB is a visible blur, about 30 dB hard to tell apart at a glance. SSIM (Wang et
# al. 2004) compares local means, variances and covariance under an 11-pixel Gaussian window: it
# is 1 for identical images and drops for lost structure (edges, texture) more than for a small
# uniform brightness shift. `labkit.splatting.metrics.ssim` matches scikit-image's
# `structural_similarity` with Wang et al.'s settings (the unit tests compare them).

# %%
print(inspect.getsource(psnr).split('"""')[-1])
blurred = F.avg_pool2d(target.permute(2, 0, 1)[None], 3, 1, 1, count_include_pad=False)[0].permute(
    1, 2, 0
)
brighter = (target + 0.05).clamp(0, 1)
for name, image in [
    ("3×3 box blur", blurred),
    ("+0.05 brightness", brighter),
    ("the 2D fit", fit.renders[steps_2d]),
]:
    print(f"{name:18s} PSNR {psnr(image, target):5.2f} dB   SSIM {ssim(image, target):.3f}")
claim("SSIM drops more for a 3×3 blur than for a +0.05 brightness shift",
      ssim(blurred, target) < ssim(brighter, target),
      f"SSIM {ssim(blurred, target):.3f} (blur, {psnr(blurred, target):.1f} dB) vs "
      f"{ssim(brighter, target):.3f} (+0.05, {psnr(brighter, target):.1f} dB)", smoke=smoke)  # fmt: skip

# %% [markdown]
# ## 4. Densify and prune (adaptive density control)
# A fit that starts from too few Gaussians cannot place detail it has no Gaussians for. 3DGS
# (sec. 5.2) watches, per Gaussian, the norm of the loss gradient with respect to its
# *image-space* mean, averaged over the steps in which it was drawn: a large average means the
# Gaussian keeps being pulled around, its region is not reconstructed well. Every 100 steps:
#
# * **clone** small Gaussians with a large gradient (a detail is missing: add material);
# * **split** large ones into two children drawn from the parent, scales ÷ 1.6 (one blob covers
#   detail it cannot represent);
# * **prune** the nearly transparent ones (opacity < 0.005);
# * and keep Adam's moments for the Gaussians that stay, zeros for the new ones.
#
# With the order-free sum a copy would double the colour its region receives, so in 2D the
# clones share their parent's opacity and the children of a split keep its total weight
# (`conserve_sum=True`). Below: the same image from `densify_from` Gaussians, once fixed and once
# densified up to `num_gaussians` (densification stops at 60 % of the steps so that the last
# steps settle what the splits disturbed, as 3DGS stops at 15k of its 30k steps). The gradient
# threshold is in the fit's units: the MSE averaged over pixels gives gradients of about 1e-5
# per pixel of movement, so 3DGS's 2e-4 (in its own screen units) would never fire here.

# %%
print(inspect.getsource(densify_and_prune).split('"""')[-1][:1800])
every = max(1, steps_2d // 6)
densify_2d = DensifyConfig(start=every, stop=int(0.6 * steps_2d), every=every, grad_threshold=1e-5,
                           scale_threshold=3.0, max_gaussians=num_gaussians, conserve_sum=True)  # fmt: skip
t0 = time.perf_counter()
sparse_runs = {
    f"{densify_from} fixed": fit_2d(target, densify_from, steps_2d, eval_every=max(1, every // 5), render_steps=[steps_2d], generator=gen()),
    f"{densify_from} → densified": fit_2d(target, densify_from, steps_2d, eval_every=max(1, every // 5), render_steps=[steps_2d], densify=densify_2d, generator=gen()),
}  # fmt: skip
sparse_runs[f"{num_gaussians} fixed (section 3)"] = fit
timings["2D densify"] = time.perf_counter() - t0

fig, axes = plt.subplots(1, 4, figsize=(12, 3.3))
for ax, (name, run) in zip(axes, sparse_runs.items()):
    show(ax, run.renders[steps_2d], f"{name}: {len(run.gaussians)} G, {run.psnr[-1]:.1f} dB")
dense_run = sparse_runs[f"{densify_from} → densified"]
block = max(1, image_size // 16)  # Gaussians per block of block × block pixels
cells = (dense_run.gaussians.means / block).long().clamp(0, image_size // block - 1)
counts = torch.zeros(image_size // block, image_size // block).index_put_((cells[:, 1], cells[:, 0]), torch.ones(len(cells)), accumulate=True)  # fmt: skip
im = axes[3].imshow(counts.numpy(), cmap="magma", extent=(0, image_size, image_size, 0))
plt.colorbar(im, ax=axes[3], fraction=0.046)
axes[3].set_title(f"densified: Gaussians per {block}×{block} px", fontsize=8)
axes[3].axis("off")
plt.show()
# Does the count per block follow the image's detail? Edge strength: mean |finite difference|.
edges = torch.zeros(image_size, image_size)
edges[:, 1:] += (target[:, 1:] - target[:, :-1]).abs().sum(-1)
edges[1:] += (target[1:] - target[:-1]).abs().sum(-1)
edges = F.avg_pool2d(edges[None, None], block)[0, 0]
correlations = {}
for name, run in sparse_runs.items():
    cells = (run.gaussians.means / block).long().clamp(0, image_size // block - 1)
    n = torch.zeros_like(edges).index_put_((cells[:, 1], cells[:, 0]), torch.ones(len(cells)), accumulate=True)  # fmt: skip
    r = torch.corrcoef(torch.stack([n.flatten(), edges.flatten()]))[0, 1]
    print(f"{name:28s} correlation of Gaussians per block with edge strength: {r:+.2f}")
    correlations[name] = float(r)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3))
for name, run in sparse_runs.items():
    ax1.plot(run.eval_steps, run.psnr, "o-", ms=3, label=name)
    ax2.plot(run.eval_steps, run.num_gaussians, "o-", ms=3, label=name)
for ax in (ax1, ax2):
    for step in range(densify_2d.start, densify_2d.stop + 1, densify_2d.every):
        ax.axvline(step, color="grey", lw=0.5, ls=":")
ax1.set(xlabel="step", ylabel="PSNR (dB)", title="dotted: densification rounds")
ax2.set(xlabel="step", ylabel="number of Gaussians")
ax1.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Three things to read off these runs. **Each round costs PSNR at once** (the curve is measured
# right after every round): cloning changes nothing in the picture, but a split moves its mass
# to two sampled positions, and with the order-free sum the neighbours' carefully balanced
# (sometimes negative) colours no longer cancel; the fit recovers within a few dozen steps, and
# once densification stops it stays above the fixed set, by several dB at the end. **The gain
# is the count, not the placement**: the map of Gaussians per block is patchy and barely
# correlated with the image's edges (the printed correlations: about 0.0-0.2 for all three sets). Early in a 2D fit almost every
# Gaussian is "pulled around", so the gradient test picks most of them (the cap decides how
# many). **A known budget is better spent at the start** for one image: 2,000 Gaussians from
# step 0 beat 500 densified towards 2,000. Densification earns its keep in 3D, where the sparse
# SfM points leave whole regions (textureless walls, thin structures) without any Gaussian.

# %%
fixed, grown = sparse_runs[f"{densify_from} fixed"], sparse_runs[f"{densify_from} → densified"]
claim("densified ends above the fixed set by several (≥ 2) dB", grown.psnr[-1] - fixed.psnr[-1] >= 2,
      f"{grown.psnr[-1]:.1f} vs {fixed.psnr[-1]:.1f} dB", smoke=smoke)  # fmt: skip
claim("Gaussians per block barely follow the edges (|r| ≤ 0.25 for all three sets)",
      max(abs(r) for r in correlations.values()) <= 0.25,
      ", ".join(f"{r:+.2f}" for r in correlations.values()), smoke=smoke)  # fmt: skip
claim(f"{num_gaussians} Gaussians from step 0 beat {densify_from} densified", fit.psnr[-1] > grown.psnr[-1],
      f"{fit.psnr[-1]:.1f} vs {grown.psnr[-1]:.1f} dB", smoke=smoke)  # fmt: skip

# %% [markdown]
# ## 5. From 3D to the image: cameras and the EWA projection
# **The scene.** Two spheres and a cube on a floor tile, ray cast with exact ground truth
# (`labkit.splatting.scene`). 24 training cameras on two orbits (20° and 50° above the floor) and
# 8 held-out cameras on a third orbit at 35°, at azimuths no training camera has: the test asks
# for new views. The "SfM" points are samples of the visible surfaces with position and colour
# noise, as triangulated points have.

# %%
t0 = time.perf_counter()
if smoke:
    scene = make_scene_data(
        size=scene_size, num_train=6, num_test=2, num_points=300, supersample=1, seed=seed
    )
else:
    scene = make_scene_data(size=scene_size, seed=seed)  # 24 training, 8 held-out views
extent = (scene.points - scene.points.mean(0)).norm(dim=-1).max().item()  # 3DGS's spatial_lr_scale
print(f"{len(scene.train_cameras)} training views, {len(scene.test_cameras)} held-out, "
      f"{len(scene.points)} SfM-like points, scene extent {extent:.2f}")  # fmt: skip

fig = plt.figure(figsize=(12, 3.6))
ax3d = fig.add_subplot(1, 3, 1, projection="3d")
ax3d.scatter(*scene.points.T, c=scene.colors.numpy(), s=2)
for cameras, marker, label in [
    (scene.train_cameras, "^", "training"),
    (scene.test_cameras, "o", "held-out"),
]:
    centres = torch.stack([c.center for c in cameras])
    ax3d.scatter(*centres.T, marker=marker, s=18, label=f"{label} cameras")
ax3d.set(xlabel="x", ylabel="y", zlabel="z", title="SfM points and cameras")
ax3d.legend(fontsize=7, loc="upper left")
for k, (image, title) in enumerate(
    [(scene.train_images[0], "training view 0"), (scene.test_images[0], "held-out view 0")]
):
    show(fig.add_subplot(1, 3, k + 2), image, title)
plt.show()

# %% [markdown]
# **The projection.** A camera maps a world point to camera coordinates $t = W\mu + b$ (OpenCV
# axes: x right, y down, z forward) and then to pixels,
# $u = f_x x / z + c_x,\; v = f_y y / z + c_y$. The projection is not linear, so the image of a
# Gaussian is not exactly a Gaussian. EWA splatting (Zwicker et al. 2001) linearises it at the
# mean: with the Jacobian
#
# $$J = \frac{\partial (u, v)}{\partial (x, y, z)} = \begin{pmatrix} f_x / z & 0 & -f_x x / z^2 \\ 0 & f_y / z & -f_y y / z^2 \end{pmatrix},$$
#
# a Gaussian of world covariance Σ lands on the image as a 2D Gaussian with covariance
#
# $$\Sigma' = J\,W\,\Sigma\,W^\top J^\top \;(+\,0.3\,I),$$
#
# W the world-to-camera rotation. 3DGS adds 0.3 px² to the diagonal (a low-pass filter: no
# splat is thinner than about a pixel, so none falls between pixel centres and vanishes), and
# clamps x/z, y/z to 1.3 × the half field of view before computing J (far off-screen the
# linearisation is poor and the 1/z² terms would blow the footprint up).
# Autograd gives the same Jacobian as the formula:

# %%
print(inspect.getsource(project_covariances).split('"""')[-1])
camera = scene.test_cameras[0]
p_cam = world_to_camera(scene.points[:3], camera)  # [3, 3] camera-space means
by_autograd = torch.stack([
    torch.autograd.functional.jacobian(lambda p: project_points(p[None], camera)[0], p) for p in p_cam
])  # fmt: skip
print("J by the formula == J by autograd:", torch.allclose(projection_jacobian(p_cam, camera, clamp=False), by_autograd, atol=1e-4))  # fmt: skip

# %% [markdown]
# **The same Gaussian from three cameras.** An elongated 3D Gaussian (σ = 0.35, 0.06, 0.06 along
# a tilted axis) projected by EWA into three views; the ellipse is the 3σ contour of Σ', the
# dots are 2,000 samples of the 3D Gaussian pushed through the exact (non-linear) projection.
# Where the linearisation holds, the samples fill the ellipse.

# %%
mu = torch.tensor([[0.0, 0.0, 0.5]])
q = torch.tensor([[math.cos(0.4), 0.0, math.sin(0.4), 0.0]])  # 46° about the y axis
Sigma = covariance_from_scale_rotation(
    torch.tensor([[0.35, 0.06, 0.06]]), quaternion_to_rotation(q)
)  # [1, 3, 3]
samples = mu + torch.randn(2000, 3, generator=gen(2)) @ torch.linalg.cholesky(Sigma[0]).T
views = orbit_cameras(3, 3.5, 30.0, 96, 96, 50.0, azimuth_offset_deg=20.0)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, cam in zip(axes, views):
    m_cam = world_to_camera(mu, cam)
    m2d, cov2d = project_points(m_cam, cam)[0], project_covariances(Sigma, m_cam, cam)[0]
    uv = project_points(world_to_camera(samples, cam), cam)
    ax.scatter(*uv.T, s=1, alpha=0.3)
    vals, vecs = torch.linalg.eigh(cov2d)
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))
    ax.add_patch(
        Ellipse(
            m2d.tolist(),
            6 * vals[1].sqrt().item(),
            6 * vals[0].sqrt().item(),
            angle=angle,
            fill=False,
            ec="red",
        )
    )
    ax.set(xlim=(0, 96), ylim=(96, 0), aspect="equal", xlabel="u (px)", ylabel="v (px)")
    ax.set_title("camera at ({:.1f}, {:.1f}, {:.1f})".format(*cam.center.tolist()), fontsize=8)
axes[0].legend(["samples, exact projection", "EWA: 3σ of Σ'"], fontsize=7, loc="lower left")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 2: the projection Jacobian
# Write `my_jacobian(points_cam [N, 3], camera) -> J [N, 2, 3]` from the formula above (no
# clamping), with `camera.fx`, `camera.fy`. Checked against
# `projection_jacobian(points_cam, camera, clamp=False)`.
# Delete the line that binds the reference to check yours.


# %%
def my_jacobian(points_cam, camera):
    raise NotImplementedError  # your code: [[fx/z, 0, -fx x/z²], [0, fy/z, -fy y/z²]] per point


def jacobian_reference(points_cam, camera):
    return projection_jacobian(points_cam, camera, clamp=False)


def jacobian_inputs(trial_seed):
    g = gen(200 + trial_seed)
    points = torch.randn(6, 3, generator=g) * torch.tensor([1.0, 1.0, 0.3]) + torch.tensor(
        [0.0, 0.0, 4.0]
    )
    return points, scene.train_cameras[trial_seed]


my_jacobian = jacobian_reference  # delete this line to check your own
passed = check_exercise(
    my_jacobian, jacobian_reference, jacobian_inputs,
    cases=[Case((torch.tensor([[0.0, 0.0, 2.0]]), camera), "on the optical axis: no z column")],
    expects="my_jacobian(points_cam [N, 3], camera) -> J [N, 2, 3]",
)  # fmt: skip

# %% [markdown]
# ### Exercise 3: the EWA projection
# Write `my_project_covariance(cov3d [N, 3, 3], points_cam [N, 3], camera) -> Σ' [N, 2, 2]`:
# $J W \Sigma W^\top J^\top + 0.3 I$, with W = `camera.R` and J from `projection_jacobian` (or your
# own). Checked against `project_covariances` on points inside the field of view (where the
# clamp does nothing).
# Delete the line that binds the reference to check yours.


# %%
def my_project_covariance(cov3d, points_cam, camera):
    raise NotImplementedError  # your code


def ewa_inputs(trial_seed):
    g = gen(300 + trial_seed)
    cov3d = covariance_from_scale_rotation(torch.rand(4, 3, generator=g) * 0.3 + 0.02, quaternion_to_rotation(torch.randn(4, 4, generator=g)))  # fmt: skip
    points = torch.randn(4, 3, generator=g) * torch.tensor([0.5, 0.5, 0.3]) + torch.tensor(
        [0.0, 0.0, 4.0]
    )
    return cov3d, points, scene.train_cameras[trial_seed]


iso = covariance_from_scale_rotation(torch.tensor([[0.1, 0.1, 0.1]]), torch.eye(3)[None])
my_project_covariance = project_covariances  # delete this line to check your own
passed = check_exercise(
    my_project_covariance, project_covariances, ewa_inputs,
    cases=[Case((iso, torch.tensor([[0.0, 0.0, 4.0]]), camera), "a sphere on the axis: a circle of σ = f σ / z")],
    expects="my_project_covariance(cov3d [N, 3, 3], points_cam [N, 3], camera) -> cov2d [N, 2, 2]",
    rtol=1e-4, atol=1e-5,
)  # fmt: skip

# %% [markdown]
# ## 6. Sorting, tiling and compositing
# Now every Gaussian is a splat on the image. 3DGS composites them front to back (eq. 3), with
# $\alpha_i = o_i\, G_i(p)$ and the transmittance $T_i$ (how much light still gets through):
#
# $$C(p) = \sum_i c_i\,\alpha_i\,T_i + T_\text{final}\; c_\text{bg},\qquad T_i = \prod_{j<i}(1-\alpha_j).$$
#
# The sum only makes sense with the splats sorted near to far: a splat behind an opaque one
# must contribute nothing. As in 3DGS, α is clamped at 0.99 (a fully opaque splat would stop all
# gradient to what lies behind), splats with α < 1/255 are skipped, and a pixel stops once
# $T < 10^{-4}$ (early stop: most pixels are done after a few splats).
#
# **Tiles.** Evaluating every splat at every pixel costs O(N × H × W). The 3DGS rasteriser cuts
# the image into 16 × 16 tiles, lists every (tile, splat) pair whose 3σ square touches the tile
# (duplicating a splat per tile it covers), sorts the list by a 64-bit key `tile << 32 | depth`
# (one GPU radix sort gives every tile its splats in depth order) and lets one thread block
# composite one tile. `labkit.splatting.rasterise.render` does the same with tensors (8-pixel
# tiles for these small images); `render_dense` is the obvious every-pixel-every-splat version
# the tests compare it with. Below: `render_gaussians_3d`'s steps one at a time, on the starting
# Gaussians (one per SfM point) seen from held-out camera 0, and the pairs per tile.

# %%
print(inspect.getsource(render_gaussians_3d).split('"""')[-1])


def splats_in_view(gaussians, camera, near=0.2):
    """``render_gaussians_3d``'s first steps: cull behind the near plane, project the means, EWA,
    colour. Returns the splats in index order and their camera depths ``[V]``."""
    with torch.no_grad():
        points_cam = world_to_camera(gaussians.means, camera)  # [N, 3]
        keep = points_cam[:, 2] > near
        points_cam, means = points_cam[keep], gaussians.means[keep]
        cov2d = project_covariances(gaussians.covariances()[keep], points_cam, camera)  # [V, 2, 2]
        directions = F.normalize(means - camera.center, dim=-1)  # camera -> Gaussian
        colors = sh_to_rgb(gaussians.sh[keep], directions)  # [V, 3]
        splats = make_splats(
            project_points(points_cam, camera), cov2d, colors, gaussians.opacities[keep]
        )
    return splats, points_cam[:, 2]


def reordered(splats, order):
    return Splats(
        *(getattr(splats, f)[order] for f in ("means2d", "conics", "colors", "opacities", "radii"))
    )


start = gaussians_3d_from_points(scene.points, scene.colors)  # opacity 0.1, isotropic
splats, depth = splats_in_view(start, camera)
front_to_back = reordered(splats, torch.argsort(depth, stable=True))
image, alpha = render(front_to_back, camera.height, camera.width, "alpha", scene.background)
reference = render_gaussians_3d(start, camera, scene.background).image
print(
    f"{len(splats.radii)} splats; the steps above == render_gaussians_3d: {torch.allclose(image, reference, atol=1e-6)}"
)
tile = 8
tile_ids, splat_ids = tile_pairs(
    front_to_back.means2d, front_to_back.radii, camera.height, camera.width, tile
)
tiles_x, tiles_y = -(-camera.width // tile), -(-camera.height // tile)
per_tile = torch.bincount(tile_ids, minlength=tiles_x * tiles_y).reshape(tiles_y, tiles_x)
dense_pairs = len(splats.radii) * camera.height * camera.width
print(f"{len(tile_ids):,} (tile, splat) pairs × {tile * tile} pixels = {len(tile_ids) * tile * tile:,} "
      f"evaluations, against {dense_pairs:,} for every pixel × every splat")  # fmt: skip

fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
axes[0].imshow(torch.ones(camera.height, camera.width, 3).numpy())
for i in torch.argsort(depth, descending=True)[::4].tolist():  # every 4th splat, back to front
    m, conic = splats.means2d[i], splats.conics[i]
    vals, vecs = torch.linalg.eigh(torch.linalg.inv(conic))
    axes[0].add_patch(Ellipse((m - 0.5).tolist(), 2 * vals[1].sqrt().item(), 2 * vals[0].sqrt().item(),
                              angle=math.degrees(math.atan2(vecs[1, 1], vecs[0, 1])), lw=0,
                              fc=splats.colors[i].clamp(0, 1).tolist(), alpha=0.6))  # fmt: skip
axes[0].set(
    xlim=(-0.5, camera.width - 0.5), ylim=(camera.height - 0.5, -0.5), title="1σ splats (every 4th)"
)
axes[0].axis("off")
im = axes[1].imshow(per_tile.numpy(), cmap="viridis", extent=(0, camera.width, camera.height, 0))
for k in range(1, tiles_x):
    axes[1].axvline(k * tile, color="white", lw=0.3)
    axes[1].axhline(k * tile, color="white", lw=0.3)
axes[1].set_title(f"splats per {tile}×{tile} tile", fontsize=8)
plt.colorbar(im, ax=axes[1], fraction=0.046)
show(axes[2], image, "composited (start: opacity 0.1)")
show(axes[3], scene.test_images[0], "ground truth")
axes[1].axis("off")
plt.show()

# %% [markdown]
# ### Exercise 4: compositing at one pixel
# Write `my_composite(colors [N, 3], alphas [N]) -> color [3]`: the splats are given front to
# back, black background, $C = \sum_i c_i \alpha_i T_i$ with $T_i = \prod_{j<i}(1-\alpha_j)$
# (`torch.cumprod` gives inclusive products: shift by one). The inputs never trigger the clamp,
# the skip or the early stop. Checked against labkit's rasteriser on a 1 × 1 image with every
# splat centred on the pixel (there G = 1, so α = opacity).
# Delete the line that binds the reference to check yours.


# %%
def my_composite(colors, alphas):
    raise NotImplementedError  # your code


def composite_reference(colors, alphas):
    n = len(alphas)
    splats = make_splats(torch.full((n, 2), 0.5), torch.eye(2).expand(n, 2, 2), colors, alphas)
    return render_dense(splats, 1, 1, mode="alpha")[0][0, 0]  # the one pixel's colour [3]


def composite_inputs(trial_seed):
    g = gen(400 + trial_seed)
    return torch.rand(5, 3, generator=g), torch.rand(5, generator=g) * 0.75 + 0.05


red_over_blue = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
my_composite = composite_reference  # delete this line to check your own
passed = check_exercise(
    my_composite, composite_reference, composite_inputs,
    cases=[
        Case((red_over_blue, torch.tensor([0.9, 0.9])), "red in front: mostly red"),
        Case((red_over_blue.flip(0), torch.tensor([0.9, 0.9])), "the same two, blue in front: mostly blue"),
        Case((red_over_blue[:1], torch.tensor([0.5])), "one splat: c · α"),
    ],
    expects="my_composite(colors [N, 3] front to back, alphas [N]) -> color [3]",
)  # fmt: skip
timings["scene, projection, tiles"] = time.perf_counter() - t0

# %% [markdown]
# ## 7. Fitting the scene (3DGS)
# Each step renders one training view (an epoch visits all 24 in a random order) and takes the
# loss of 3DGS (eq. 7),
#
# $$\mathcal{L} = (1-\lambda)\,\mathcal{L}_1 + \lambda\,(1 - \mathrm{SSIM}),\qquad \lambda = 0.2 .$$
#
# L1 is robust to the few pixels no Gaussian explains yet; the SSIM term rewards edges and texture
# that a per-pixel loss blurs away. Learning rates per parameter kind come from 3DGS; the means'
# rate is scaled by the scene's extent and decays exponentially to 1 % over the fit. The
# Gaussians start from the SfM points (opacity 0.1: none hides another yet) and are densified
# every `steps_3d / 10` steps from 20 % to 70 % of the fit, up to 3 × as many as there were
# points (a gradient threshold of 2e-5 per pixel). Everything is measured on the 8 held-out views.

# %%
print(inspect.getsource(image_loss).split('"""')[-1])
every_3d = max(1, steps_3d // 10)
densify_3d = DensifyConfig(start=2 * every_3d, stop=int(0.7 * steps_3d), every=every_3d, grad_threshold=2e-5,
                           scale_threshold=0.1, max_gaussians=3 * len(scene.points))  # fmt: skip
marks_3d = sorted({max(1, steps_3d // 10), steps_3d // 2, steps_3d})
t0 = time.perf_counter()
before_fit = render_gaussians_3d(start, scene.test_cameras[0], scene.background).image.clamp(0, 1)
fit3 = fit_3d(
    scene, steps_3d, densify=densify_3d, eval_every=every_3d, render_steps=marks_3d, generator=gen()
)
timings["3D fit"] = time.perf_counter() - t0
print(f"{steps_3d} steps in {fit3.seconds:.0f} s ({fit3.cpu_seconds:.0f} CPU-s): held-out PSNR "
      f"{fit3.psnr[-1]:.2f} dB, SSIM {fit3.ssim[-1]:.3f}, {fit3.num_gaussians[-1]} Gaussians "
      f"(started from {len(scene.points)} points)")  # fmt: skip
claim("the 3D fit reaches a held-out PSNR near 30 dB (≥ 28)", fit3.psnr[-1] >= 28, f"{fit3.psnr[-1]:.2f} dB",
      smoke=smoke)  # fmt: skip
grown_3d = fit3.num_gaussians[-1] / len(scene.points)
claim("densification roughly triples the SfM start (2.5-3 ×)", 2.5 <= grown_3d <= 3.0, f"{grown_3d:.2f} ×",
      smoke=smoke)  # fmt: skip

fig, axes = plt.subplots(1, len(marks_3d) + 2, figsize=(2.3 * (len(marks_3d) + 2), 2.6))
show(axes[0], before_fit, f"start: {psnr(before_fit, scene.test_images[0]):.1f} dB")
for ax, step in zip(axes[1:], marks_3d):
    show(
        ax,
        fit3.renders[step],
        f"step {step}: {psnr(fit3.renders[step], scene.test_images[0]):.1f} dB",
    )
show(axes[-1], scene.test_images[0], "held-out view 0 (truth)")
plt.show()

fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3))
ax1.plot(fit3.eval_steps, fit3.psnr, "o-", ms=3)
ax1.set(xlabel="step", ylabel="held-out PSNR (dB)", title="mean over the 8 held-out views")
ax2.plot(fit3.eval_steps, fit3.ssim, "s-", ms=3, color="tab:orange")
ax2.set(xlabel="step", ylabel="held-out SSIM")
ax3.plot(fit3.eval_steps, fit3.num_gaussians, "o-", ms=3, color="tab:green")
ax3.set(xlabel="step", ylabel="number of Gaussians", title="densification")
fig.tight_layout()
plt.show()

# %% [markdown]
# **New viewpoints.** An orbit around the fitted scene at 35° elevation, 96 × 96 pixels (the
# Gaussians render at any resolution: no training image was this size), with the ray-cast truth
# for comparison. The strip is for reading; the GIF (written with matplotlib) is the orbit.

# %%
t0 = time.perf_counter()
orbit = orbit_cameras(orbit_frames, 4.0, 35.0, 96, 96, 45.0, azimuth_offset_deg=7.0)
with torch.no_grad():
    frames = [render_gaussians_3d(fit3.gaussians, cam, scene.background).image.clamp(0, 1) for cam in orbit]  # fmt: skip
ms_per_frame = 1000 * (time.perf_counter() - t0) / orbit_frames
truths = [render_scene(scene.scene, cam, supersample=2) for cam in orbit]
orbit_psnr = sum(psnr(f, t).item() for f, t in zip(frames, truths)) / len(orbit)
shown = list(range(0, orbit_frames, max(1, orbit_frames // 6)))[:6]
fig, axes = plt.subplots(2, len(shown), figsize=(1.9 * len(shown), 4.1))
for col, k in enumerate(shown):
    show(axes[0, col], frames[k], f"splats, azimuth {7 + 360 * k / orbit_frames:.0f}°")
    show(axes[1, col], truths[k], "ray-cast truth")
plt.show()
print(f"orbit at 96 px: mean PSNR {orbit_psnr:.2f} dB over {orbit_frames} views; {len(fit3.gaussians)} "
      f"Gaussians render in {ms_per_frame:.0f} ms a frame ({1000 / ms_per_frame:.0f} FPS) on one core")  # fmt: skip

fig, ax = plt.subplots(figsize=(2.4, 2.4))
ax.axis("off")
canvas = ax.imshow(frames[0].numpy())
fig.tight_layout(pad=0)
gif = RUNS / "p50_orbit.gif"
FuncAnimation(fig, lambda k: canvas.set_data(frames[k].numpy()), frames=orbit_frames).save(gif, writer=PillowWriter(fps=8))  # fmt: skip
plt.close(fig)
timings["orbit"] = time.perf_counter() - t0
display(Image(filename=str(gif)))

# %% [markdown]
# ## 8. Failure modes
# Each one a short run or a re-render that changes one thing.
#
# **(a) Too few Gaussians, no densification.** Section 4 ran it: from `densify_from` Gaussians
# with a fixed set, the fit saturates (its PSNR curve flattens several dB below the others): 500
# Gaussians × 9 numbers cannot hold a 128 × 128 photo. Densification grows the set during the
# fit; in 3D (section 7) it roughly triples the SfM start.
#
# **(b) The means' learning rate too high.** Adam's step is about the learning rate in size
# whatever the gradient, so the positional rate is a distance per step (pixels, here). At
# 0.05 px a Gaussian drifts a few pixels over a fit. At 5 px a step (100×) the early steps
# scatter the Gaussians, but the decay to 5 % brings the rate down in time and the fit ends
# within a dB of 0.05's; at 20 px (400×) every Gaussian keeps jumping past the edge it was
# fitting and the fit never settles: several dB below. The same short fit at three rates:

# %%
t0 = time.perf_counter()
small = load_image(image_name, min(image_size, 64))
lr_runs = {f"means LR {lr} px/step": fit_2d(small, max(densify_from // 2, 30), failure_steps, lr={"means": lr},
                                             eval_every=max(1, failure_steps // 10), render_steps=[failure_steps], generator=gen())
           for lr in (0.05, 5.0, 20.0)}  # fmt: skip
fig, axes = plt.subplots(1, 4, figsize=(12, 2.9))
for k, (name, run) in enumerate(lr_runs.items()):
    show(axes[k], run.renders[failure_steps], f"{name}: {run.psnr[-1]:.1f} dB")
    axes[3].plot(run.eval_steps, run.psnr, "o-", ms=3, label=name)
axes[3].set(xlabel="step", ylabel="PSNR (dB)")
axes[3].legend(fontsize=7)
fig.tight_layout()
plt.show()
lr_psnr = {lr: run.psnr[-1] for lr, run in zip((0.05, 5.0, 20.0), lr_runs.values(), strict=True)}
claim("at 5 px a step the fit ends within a dB of 0.05's", abs(lr_psnr[5.0] - lr_psnr[0.05]) <= 1,
      f"{lr_psnr[5.0]:.1f} vs {lr_psnr[0.05]:.1f} dB", smoke=smoke)  # fmt: skip
claim("at 20 px a step the fit ends several (≥ 3) dB below", lr_psnr[0.05] - lr_psnr[20.0] >= 3,
      f"{lr_psnr[20.0]:.1f} vs {lr_psnr[0.05]:.1f} dB", smoke=smoke)  # fmt: skip

# %% [markdown]
# **(c) Compositing without the depth sort, or in the wrong order.** The fitted scene from
# held-out view 0, composited in index order (whatever order the points came in: objects look
# translucent, the floor bleeds through), back to front (far splats drawn on top: the floor
# covers the objects) and front to back (the right order). Nothing is retrained: the same
# splats, another order.

# %%
trained_splats, trained_depth = splats_in_view(fit3.gaussians, camera)
near_to_far = torch.argsort(trained_depth, stable=True)
orders = {
    "index order (no sort)": torch.arange(len(trained_depth)),
    "far to near": near_to_far.flip(0),
    "near to far": near_to_far,
}
fig, axes = plt.subplots(1, len(orders) + 1, figsize=(9.5, 2.7))
order_psnr = {}
for ax, (name, order) in zip(axes, orders.items()):
    wrong, _ = render(
        reordered(trained_splats, order), camera.height, camera.width, "alpha", scene.background
    )
    show(ax, wrong, f"{name}: {psnr(wrong.clamp(0, 1), scene.test_images[0]):.1f} dB")
    order_psnr[name] = psnr(wrong.clamp(0, 1), scene.test_images[0]).item()
show(axes[-1], scene.test_images[0], "truth")
plt.show()
claim("near to far is the best of the three orders", max(order_psnr, key=order_psnr.get) == "near to far",
      ", ".join(f"{n} {v:.1f} dB" for n, v in order_psnr.items()), smoke=smoke)  # fmt: skip

# %% [markdown]
# **(d) Opacity starting at 1.** 3DGS starts every Gaussian at opacity 0.1: early on, no
# Gaussian hides another, so every one along a ray gets a gradient. Start them at 0.99 and the
# first Gaussian along each ray takes almost all of the pixel ($T \approx 0.01$ behind it): the
# ones behind get almost no gradient, and what is in front of the surface stays opaque. Whether
# that hurts depends on where the Gaussians start. From the SfM points, which lie on the
# surfaces, opaque is nearly right. From random positions (3DGS's start when there are no SfM
# points), Gaussians float in the empty space in front of the objects and hide them. The same
# short loop (`fit_3d`'s step without densification or decay: `fit_3d` always starts at 0.1)
# from four starts, seen from held-out camera 0:


# %%
def short_fit_3d(gaussians, steps):
    """Render a training view, (1 - λ) L1 + λ (1 - SSIM), Adam at LR_3D: fit_3d's step, nothing else."""
    gaussians = gaussians.requires_grad_()
    rates = {**LR_3D, "means": LR_3D["means"] * extent}
    optimizer = torch.optim.Adam([{"params": [t], "lr": rates[k]} for k, t in gaussians.tensors().items()], eps=1e-15)  # fmt: skip
    for step in range(steps):
        view = step % len(scene.train_cameras)
        out = render_gaussians_3d(gaussians, scene.train_cameras[view], scene.background)
        loss = image_loss(out.image, scene.train_images[view], 0.2, "l1")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return gaussians.detach()


t0 = time.perf_counter()
half = scene.points.abs().max().item()  # random starts fill the points' bounding cube
starts = {
    "SfM points, opacity 0.1": gaussians_3d_from_points(scene.points, scene.colors, opacity=0.1),
    "SfM points, opacity 0.99": gaussians_3d_from_points(scene.points, scene.colors, opacity=0.99),
    "random, opacity 0.1": random_gaussians_3d(
        len(scene.points), half, generator=gen(5), opacity=0.1
    ),
    "random, opacity 0.99": random_gaussians_3d(
        len(scene.points), half, generator=gen(5), opacity=0.99
    ),
}
fig, axes = plt.subplots(2, len(starts), figsize=(2.4 * len(starts), 5.2))
start_psnr = {}
for col, (name, begin) in enumerate(starts.items()):
    show(axes[0, col], render_gaussians_3d(begin, camera, scene.background).image, f"{name}: start")
    after = short_fit_3d(begin, failure_steps)
    p, s, renders = evaluate_3d(after, scene.test_cameras, scene.test_images, scene.background)
    show(axes[1, col], renders[0], f"after {failure_steps} steps: {p:.1f} dB")
    print(f"{name:26s} held-out PSNR {p:5.2f} dB, SSIM {s:.3f} after {failure_steps} steps; "
          f"median opacity now {after.opacities.median():.2f}")  # fmt: skip
    start_psnr[name] = p
plt.show()
claim("from the SfM points, starting opaque costs under a dB",
      start_psnr["SfM points, opacity 0.1"] - start_psnr["SfM points, opacity 0.99"] < 1,
      f"{start_psnr['SfM points, opacity 0.99']:.1f} vs {start_psnr['SfM points, opacity 0.1']:.1f} dB",
      smoke=smoke)  # fmt: skip
claim("from random positions, starting opaque costs several (≥ 3) dB",
      start_psnr["random, opacity 0.1"] - start_psnr["random, opacity 0.99"] >= 3,
      f"{start_psnr['random, opacity 0.99']:.1f} vs {start_psnr['random, opacity 0.1']:.1f} dB",
      smoke=smoke)  # fmt: skip
timings["failure modes"] = time.perf_counter() - t0

# %% [markdown]
# ## 9. What the real system adds, and where this one stands
# Kerbl et al. 2023 reach **27.21 dB PSNR (SSIM 0.815, LPIPS 0.214) on Mip-NeRF 360** at 1080p,
# rendering at **~100+ FPS** (134 FPS in their table) after ~40 minutes of training on an A6000,
# with one to a few million Gaussians per scene (Tanks & Temples 23.14 dB, Deep Blending
# 29.41 dB). What it has that this notebook does not:
#
# * **A tile-based CUDA rasteriser**: 16 × 16 tiles, one GPU radix sort of all (tile, depth) keys
#   per frame, one thread block per tile compositing front to back in shared memory with early
#   stop, and a hand-written backward pass that re-traverses the splats back to front instead
#   of storing every α. `labkit.splatting.rasterise.render` has the same structure in PyTorch
#   tensors (pairs, a sort, a per-tile cumulative sum of log(1 − α)); it draws a few thousand
#   splats into a 96-pixel frame in about a tenth of a second on one CPU core (under half a
#   second even on a busy machine; section 7 prints the rate), where the CUDA kernel draws millions of splats
#   at 1080p in under 10 ms.
# * **SH degree 3**: 16 coefficients per colour channel (48 numbers per Gaussian), so colour
#   changes with the view direction (specular highlights); here degree 0 (degree 1 is in
#   `labkit.splatting`) and the Lambert-shaded scene needs no more.
# * **Full adaptive density control**: densify every 100 steps from 500 to 15k, reset every
#   opacity to 0.01 every 3,000 steps (floaters near the cameras then get pruned), prune huge
#   Gaussians in screen and world space, 30k steps. Here: a few rounds, a cap on N.
# * **Real data**: COLMAP poses and points of real photos with exposure changes, at 1-5 MP.
#
# This tiny version: a 64-pixel synthetic scene with exact poses and ~1,000 points, a thousand
# to a few thousand Gaussians, a few hundred steps in well under a minute of CPU, held-out
# PSNR near 30 dB on a scene far simpler than Mip-NeRF 360. GaussianImage (the 2D half) reports
# 1,500-2,000 FPS decoding on a GPU; here a step of the 2D fit (render, backward, Adam) takes
# about a tenth of a second (under 0.2 s) at 128 × 128 with 2,000 Gaussians on one core.

# %%
claim("a 96-pixel frame of the orbit renders in under half a second", ms_per_frame < 500,
      f"{ms_per_frame:.0f} ms a frame, {len(fit3.gaussians)} Gaussians", smoke=smoke)  # fmt: skip
claim("a step of the 2D fit takes under 0.2 s", fit.seconds / steps_2d < 0.2,
      f"{1000 * fit.seconds / steps_2d:.0f} ms a step", smoke=smoke)  # fmt: skip

# %% [markdown]
# ## Reference numbers (CPU, one torch thread, the lab's shared 2-core machine)
# This notebook, default parameters (seed 0):
#
# | fit | setting | result | time |
# |---|---|---|---|
# | 2D, astronaut 128 × 128 | 2,000 Gaussians, 300 steps | PSNR 31.00 dB, SSIM 0.951 | 23 CPU-s (23 s wall) |
# | 2D, from 500 Gaussians | fixed / densified (500 → 1,595) | 23.6 dB / 27.1 dB | 38 s wall, both |
# | 3D, 64 × 64 views, held-out | 400 steps, 1,150 → 3,450 Gaussians | PSNR 29.63 dB, SSIM 0.970 | 36 CPU-s (37 s wall) |
# | 3D, failure (d), 120 steps | SfM start at opacity 0.1 / 0.99; random start at 0.1 / 0.99 | 25.0 / 24.7 / 18.2 / 9.2 dB | 33 s wall, all four |
#
# Longer fits, the same code and settings (`make rerun NB=50_gaussian_splatting_tiny
# PARAMS="-p steps_2d 1000 -p steps_3d 1000"`; the means' learning rate decays over the whole
# fit, so step 500 of a 1,000-step fit is not a 500-step fit):
#
# | fit | PSNR at step 500 | at step 1,000 | SSIM at 1,000 | time |
# |---|---|---|---|---|
# | 2D, 2,000 Gaussians | 33.37 dB | 34.96 dB | 0.977 | 87 CPU-s (126 s wall) |
# | 3D, held-out, densified 1,150 → 3,450 | 29.40 dB | 31.85 dB | 0.983 | 101 CPU-s (141 s wall) |
#
# The notebook's times are from one papermill run with the machine's load average at about 4.3
# (other jobs on its two cores): "Run all" took 3 min 9 s, kernel start included (2 min 36 s in
# an earlier run at load ≈ 2.5); the smoke setting 12 s (30 s at load ≈ 4.5). The PSNR and
# SSIM figures do not depend on the load: the fits are deterministic for a seed.
#
# GPU: not measured (no GPU was available). The same PyTorch rasterisers run there unchanged:
# `python -m labkit.train p50_splat2d device=cuda` (or `auto`); the configs default to the CPU,
# whose figures these are. A seed starts from the same Gaussians on either device (the fit's
# generator stays on the CPU), but a GPU adds in another order, so its numbers differ a little.
#
# ## What to remember
# - Σ = R S Sᵀ Rᵀ from a log-scale and a normalised rotation: every raw parameter is valid.
# - EWA linearises the projection at the mean: Σ' = J W Σ Wᵀ Jᵀ, plus 0.3 px² against aliasing.
# - Alpha compositing needs the depth order; the order-free sum of GaussianImage does not, and is
#   enough for one image.
# - Tiles turn O(N × pixels) into O(pairs × tile²): a splat is only evaluated where it can show.
# - Densification adds Gaussians where the image-space positional gradient stays large; it
#   disturbs the fit, so it stops well before the end.
# - Learning rates are distances per step for the means; opacity starts low.

# %%
for name, seconds in timings.items():
    print(f"{name:26s} {seconds:6.1f} s")
print(f"notebook ran in {time.perf_counter() - started:.0f} s (smoke={smoke})")
