"""P40's config schema: what ``p40_active.yaml`` may hold.

The detector's sections are P10's own schemas (``labkit.detection.config``), so a key means the
same in both phases; ``active:`` holds the experiment: selectors, seeds, budget, pool.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from labkit.active.selectors import SELECTOR_NAMES
from labkit.detection.config import (
    DetectionDataConfig,
    DetectionEvalConfig,
    DetectionLossConfig,
    DetectorConfig,
)
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

SelectorName = Literal[SELECTOR_NAMES]  # type: ignore[valid-type]


class PoolConfig(Section):
    """``active.pool:`` — the skewed log (``labkit.active.pool.SkewedShapesPool``)."""

    num_images: PositiveInt = 900
    fractions: Annotated[list[NonNegativeFloat], Field(min_length=3, max_length=3)] = [
        0.75,
        0.17,
        0.08,
    ]
    burst: PositiveInt = 3
    jitter: NonNegativeFloat = 0.03
    rare_max_objects: PositiveInt = 3
    seed: Seed = 0

    @model_validator(mode="after")
    def _shares(self):
        if abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(
                f"active.pool.fractions {self.fractions} (empty, common, rare) must sum to 1"
            )
        return self


class ActiveConfig(Section):
    """``active:`` — the comparison (see p40_active.yaml for each key's meaning)."""

    selectors: Annotated[list[SelectorName], Field(min_length=1)]
    seeds: Annotated[list[Seed], Field(min_length=1)] = [0, 1, 2]
    rounds: NonNegativeInt = 3
    initial_labelled: PositiveInt = 40
    k: PositiveInt = 60
    aggregation: Literal["max", "mean", "sum"] = "max"
    score_thresh: Probability = 0.05
    warm_start: bool = False
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    mc_passes: Annotated[int, Field(ge=2)] = 8
    mc_match_iou: Probability = 0.5
    diversity_quantile: Annotated[float, Field(ge=0, lt=1)] = 0.01
    labelling: Literal["simulated", "manual"] = "simulated"
    pool: PoolConfig = PoolConfig()

    @model_validator(mode="after")
    def _comparable(self):
        if "random" not in self.selectors:
            raise ValueError("active.selectors must include random: it is the baseline")
        if len(set(self.selectors)) != len(self.selectors) or len(set(self.seeds)) != len(
            self.seeds
        ):
            raise ValueError("active.selectors and active.seeds must not repeat")
        if any("mc_dropout" in s for s in self.selectors) and self.dropout <= 0:
            raise ValueError("mc_dropout needs active.dropout > 0 (dropout samples at inference)")
        budget = self.initial_labelled + self.rounds * self.k
        if budget > self.pool.num_images:
            raise ValueError(
                f"active.initial_labelled + rounds * k = {budget} exceeds active.pool.num_images "
                f"({self.pool.num_images})"
            )
        return self


class Config(RunConfig):
    """``python -m labkit.train p40_active``: selectors × seeds × rounds on the shapes log."""

    phase: Literal["p40"]
    data: DetectionDataConfig
    model: DetectorConfig
    loss: DetectionLossConfig
    eval: DetectionEvalConfig
    optim: OptimConfig
    trainer: TrainerConfig
    active: ActiveConfig

    @model_validator(mode="after")
    def _shapes_on_the_grid(self):
        if self.data.dataset != "shapes":
            raise ValueError("data.dataset must be shapes: the held-out set of the shapes log")
        if self.data.image_size % self.model.stride:
            raise ValueError(
                f"data.image_size ({self.data.image_size}) must be a multiple of model.stride "
                f"({self.model.stride})"
            )
        if self.model.pretrained:
            raise ValueError(
                "model.pretrained must be false: P40 rebuilds the detector every round, offline"
            )
        return self
