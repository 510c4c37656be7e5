"""P10's config schema: what ``p10_detection.yaml`` / ``p10_voc.yaml`` may hold."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from labkit.detection.dataset import VOC_CLASSES
from labkit.utils.schema import (
    NonNegativeInt,
    OptimConfig,
    PositiveFloat,
    PositiveInt,
    Probability,
    RunConfig,
    Section,
    Seed,
    TrainerConfig,
)

VocClass = Literal[VOC_CLASSES]  # type: ignore[valid-type]


class DetectionDataConfig(Section):
    dataset: Literal["shapes", "voc"] = "shapes"
    image_size: Annotated[int, Field(ge=32, le=2048)] = 96
    batch_size: PositiveInt = 8
    eval_batch_size: PositiveInt = 50
    flip: Probability = 0.5
    num_workers: NonNegativeInt = 0
    # shapes only
    num_classes: Annotated[int, Field(ge=1, le=3)] = 3
    min_objects: NonNegativeInt = 1
    max_objects: PositiveInt = 4
    train_images: PositiveInt = 4000
    val_images: PositiveInt = 200
    train_seed: Seed = 0
    val_seed: Seed = 1
    # voc only
    root: str = "data"
    train_split: Literal["train", "val", "trainval"] = "train"
    val_split: Literal["train", "val", "trainval"] = "val"
    classes: list[VocClass] | None = None
    max_train_images: PositiveInt | None = None
    max_val_images: PositiveInt | None = None
    download: bool = False

    @model_validator(mode="after")
    def _objects_in_order(self):
        if self.min_objects > self.max_objects:
            raise ValueError(
                f"data.min_objects ({self.min_objects}) must not exceed data.max_objects "
                f"({self.max_objects})"
            )
        return self


class DetectorConfig(Section):
    backbone: Literal["resnet18", "resnet34"] = "resnet18"
    pretrained: bool = False
    backbone_weights: str | None = None
    stride: Literal[8, 16] = 8
    head_channels: Annotated[int, Field(ge=1, le=1024)] = 64
    unfreeze_at: NonNegativeInt = 0
    backbone_lr_scale: Annotated[float, Field(ge=0, le=10)] = 1.0


class DetectionLossConfig(Section):
    center_radius: PositiveFloat = 1.5
    box_loss: Literal["giou", "diou"] = "giou"
    l1_weight: Annotated[float, Field(ge=0)] = 1.0
    box_weight: Annotated[float, Field(ge=0)] = 1.0
    focal_alpha: Probability = 0.25
    focal_gamma: Annotated[float, Field(ge=0, le=10)] = 2.0
    # p10_detection.yaml ships varifocal (focal_alpha 0.75); a config that names neither, such as
    # P40's p40_active.yaml, keeps RetinaNet's focal loss.
    cls_loss: Literal["focal", "quality_focal", "varifocal"] = "focal"
    qfl_beta: Annotated[float, Field(ge=0, le=10)] = 2.0


class DetectionEvalConfig(Section):
    score_thresh: Probability = 0.05
    nms_iou: Probability = 0.5
    max_dets: PositiveInt = 100
    iou_threshold: Probability = 0.5
    report_score: Probability = 0.5
    log_images: NonNegativeInt = 8


class Config(RunConfig):
    """``python -m labkit.train p10_detection``: the tiny one-stage detector."""

    phase: Literal["p10"]
    data: DetectionDataConfig
    model: DetectorConfig
    loss: DetectionLossConfig
    eval: DetectionEvalConfig
    optim: OptimConfig
    trainer: TrainerConfig

    @model_validator(mode="after")
    def _grid_fits(self):
        if self.data.image_size % self.model.stride:
            raise ValueError(
                f"data.image_size ({self.data.image_size}) must be a multiple of model.stride "
                f"({self.model.stride})"
            )
        return self
