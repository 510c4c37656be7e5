"""P50's config schema (``p50_splat2d.yaml``, ``p50_splat3d.yaml``) and partial configs over the YAML.

``kind`` picks the fit and with it the shape of ``data`` and ``model``: ``image2d`` fits 2D
Gaussians to one ``skimage.data`` image, ``scene3d`` fits 3D Gaussians to the synthetic scene of
``labkit.splatting.scene``. ``optim.lr`` keeps its lab-wide meaning, "how big the steps are", as
a multiplier on the per-parameter Adam rates ``LR_2D`` / ``LR_3D`` of ``labkit.splatting.fit``
(1.0 = those defaults): a Gaussian has five or six kinds of parameters in different units, so
one number cannot be every rate.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from labkit.utils.config import ConfigError, load_config, merge_config
from labkit.utils.schema import (
    Device,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    RunConfig,
    Section,
    check_config,
)

# skimage.data images that ship with scikit-image (no download); grey ones are repeated to RGB.
IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry")
CONFIG_OF_KIND = {"image2d": "p50_splat2d", "scene3d": "p50_splat3d"}
# What a diverged fit's error says to change (labkit.trainers.guards adds the step and the tensor).
DIVERGED_ADVICE = (
    "Lower the learning rate (optim.lr, a multiplier on the per-parameter rates) or turn "
    "densification off (densify.enabled=false)"
)


Fraction = Annotated[float, Field(gt=0, le=1)]


class ImageDataConfig(Section):
    """``data:`` of ``image2d``: which image, resized to ``size × size`` pixels."""

    image: Literal[IMAGES] = "astronaut"  # type: ignore[valid-type]
    # the SSIM window is 11 px wide: smaller images cannot be scored
    size: Annotated[int, Field(ge=11, le=512)] = 128  # centre-cropped to a square, then resized


class SceneDataConfig(Section):
    """``data:`` of ``scene3d``: the synthetic scene's cameras and sparse points."""

    size: Annotated[int, Field(ge=11, le=256)] = 64  # square views, pixels (SSIM: 11 px window)
    num_train: Annotated[int, Field(ge=2, le=256)] = 24  # on two orbits (20° and 50° up)
    num_test: Annotated[int, Field(ge=1, le=64)] = 8  # held out, on an orbit between them
    # at least one point on every surface of the scene (fewer leaves a surface without any)
    num_points: Annotated[int, Field(ge=10, le=20_000)] = 2000  # "SfM" points sampled on surfaces
    supersample: Annotated[int, Field(ge=1, le=8)] = 3  # rays per pixel side (antialiasing)


class ImageModelConfig(Section):
    num_gaussians: Annotated[int, Field(ge=1, le=200_000)] = 2000
    mode: Literal["sum", "alpha"] = "sum"  # order-free sum (GaussianImage) | compositing (3DGS)
    init: Literal["image", "random"] = "image"  # colour of the pixel under each | random
    tile: Annotated[int, Field(ge=1, le=64)] = 8  # rasteriser tile side, pixels


class SceneModelConfig(Section):
    sh_degree: Literal[0, 1] = 0  # 0: one colour per Gaussian; 1: linear in the view direction
    init: Literal["points", "random"] = "points"  # one per sparse point (3DGS) | uniform in a cube
    tile: Annotated[int, Field(ge=1, le=64)] = 8


class LossConfig(Section):
    """``(1 - λ) L_kind + λ (1 - SSIM)`` (3DGS eq. 7)."""

    kind: Literal["l1", "l2"] = "l1"
    ssim_weight: Annotated[float, Field(ge=0, le=1)] = 0.2  # λ


class DensifySection(Section):
    """Clone / split / prune (``labkit.splatting.densify``); thresholds in the fit's units."""

    enabled: bool = False
    start: PositiveInt = 100  # first step that densifies
    stop: PositiveInt = 1000  # last step that may densify
    every: PositiveInt = 100
    grad_threshold: NonNegativeFloat = 2e-4  # mean ‖∂L/∂μ'‖, μ' the image-space mean in pixels
    scale_threshold: PositiveFloat = 1.0  # largest σ that is cloned, not split (px / world units)
    min_opacity: Annotated[float, Field(ge=0, lt=1)] = 0.005  # pruned below this
    max_gaussians: Annotated[int, Field(ge=1, le=200_000)] = 2000  # the budget (3DGS has none)
    conserve_sum: bool = False  # sum mode: copies share their parent's weight

    @model_validator(mode="after")
    def _ordered(self):
        if self.start > self.stop:
            raise ValueError(
                f"densify.start ({self.start}) must not exceed densify.stop ({self.stop})"
            )
        return self


class SplatOptimConfig(Section):
    """Adam with one rate per parameter kind; the means' rate decays exponentially (3DGS)."""

    lr: PositiveFloat = 1.0  # multiplier on every default rate of LR_2D / LR_3D
    scheduler: Literal["exponential", "none"] = "exponential"  # the means' rate over max_steps
    means_lr_final: Fraction = 0.05  # exponential: the means' rate ends at this share of its start


class SplatTrainerConfig(Section):
    max_steps: PositiveInt  # Adam steps, one render each (3D: one training view)
    log_every: PositiveInt = 50  # train/loss rows (mean over the window)
    eval_every: NonNegativeInt = 100  # eval/psnr, eval/ssim (+ a TensorBoard image); 0: at the end
    ckpt_every: NonNegativeInt = 0  # 0: only at the end (and on Ctrl-C / SIGTERM)
    keep_last: PositiveInt = 3


class SplatEvalConfig(Section):
    log_images: bool = True  # render next to target in TensorBoard at every evaluation


class SplatRunConfig(RunConfig):
    phase: Literal["p50"]
    device: Device = "cpu"  # auto | cpu | cuda | cuda:N; the CPU figures are the reference
    torch_threads: Annotated[int, Field(ge=1, le=256)] | None = None
    loss: LossConfig
    densify: DensifySection
    optim: SplatOptimConfig
    trainer: SplatTrainerConfig
    eval: SplatEvalConfig = SplatEvalConfig()


class ImageConfig(SplatRunConfig):
    """``python -m labkit.train p50_splat2d``: 2D Gaussians fitted to one image."""

    kind: Literal["image2d"]
    data: ImageDataConfig
    model: ImageModelConfig

    @model_validator(mode="after")
    def _budget(self):
        densify, n = self.densify, self.model.num_gaussians
        if densify.enabled and densify.max_gaussians < n:
            raise ValueError(
                f"densify.max_gaussians ({densify.max_gaussians}) is below model.num_gaussians "
                f"({n}): densification could only prune; raise it or set densify.enabled=false"
            )
        return self


class SceneConfig(SplatRunConfig):
    """``python -m labkit.train p50_splat3d``: 3D Gaussians fitted to posed views of a scene."""

    kind: Literal["scene3d"]
    data: SceneDataConfig
    model: SceneModelConfig


SCHEMAS = {"image2d": ImageConfig, "scene3d": SceneConfig}


def with_defaults(cfg: dict) -> dict:
    """``cfg`` on top of the shipped config of its ``kind``, checked against that kind's schema.

    So a partial config (``{"kind": "image2d", "trainer": {"max_steps": 50}}``) runs, and a typo
    or a value out of range fails loudly (``ConfigError``) before anything runs.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"A config must be a mapping of keys to values, got {type(cfg).__name__}."
        )
    kind = cfg.get("kind", "image2d")
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise ConfigError(
            f"1 config value cannot be used: 'kind' is {kind!r}: expected one of "
            f"{', '.join(SCHEMAS)} (labkit/configs/p50_splat2d.yaml or p50_splat3d.yaml)."
        )
    return check_config(merge_config(load_config(CONFIG_OF_KIND[kind]), cfg), SCHEMAS[kind])
