"""Phase 50: tiny Gaussian splatting — fit an image with 2D Gaussians, then a small 3D scene.

Modules, in reading order: ``gaussians`` (parameterisation, initialisers), ``cameras`` (pinhole
cameras, EWA projection of a 3D Gaussian), ``rasterise`` (order-free sum and front-to-back alpha
compositing, dense and tiled), ``scene`` (ray-cast ground truth of a few analytic primitives),
``metrics`` (PSNR, SSIM), ``densify`` (clone / split / prune with Adam state surgery), ``fit``
(one step of the algorithm: ``ImageFit``, ``SceneFit``), ``loop`` (the one loop that drives a
fit: ``fit_2d``, ``fit_3d``, ``run_fit``), ``checkpoints``, ``task`` (a lab run: build, run),
``done`` (the "done when" checks). Explained in notebooks/50_gaussian_splatting_tiny.py.
"""
