"""TinyDetector: a truncated ResNet and a small conv head, one feature level, anchor-free.

    image [B, 3, H, W] in [0, 1]
      → ImageNet normalisation
      → ResNet stem + layer1 + layer2 (stride 8)  [+ layer3 for stride 16]   (the backbone)
      → head: shared 3x3 conv tower, then a 3x3 conv to C class logits and one to 4 box deltas
      → {"cls_logits": [B, C, H/S, W/S], "box_deltas": [B, 4, H/S, W/S]}

Why one level at stride 8 by default: ShapesDataset's 128-px images give a 16x16 grid, and its
shapes (16-48 px) span 2-6 cells, so every object has cells near its centre
(``labkit.detection.assign``). Stride 16 (through layer3) suits larger images such as VOC.
A feature pyramid would handle a wider range of sizes; one level keeps the code short.

Box deltas become side distances with ``labkit.detection.assign.deltas_to_ltrb``.
Explained in notebooks/10_detection_tiny.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

__all__ = ["TinyDetector", "PRIOR_PROBABILITY"]

PRIOR_PROBABILITY = 0.01  # π of Lin et al. 2017, section 4.1 "Initialization"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BACKBONES = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
}
_STRIDES = {8: ("layer2", 128), 16: ("layer3", 256)}  # last ResNet stage kept, its channels


def _build_resnet(
    backbone: str, pretrained: bool, backbone_weights: str | Path | None
) -> nn.Module:
    """A full torchvision ResNet, with ImageNet weights, a local state dict, or random weights."""
    if backbone not in _BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(_BACKBONES)}, got {backbone!r}")
    if pretrained and backbone_weights is not None:
        raise ValueError("give either pretrained=True or backbone_weights=PATH, not both")
    builder, weights = _BACKBONES[backbone]
    if not pretrained:
        resnet = builder(weights=None)
    else:
        try:
            resnet = builder(weights=weights)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise RuntimeError(
                f"could not download the ImageNet weights of {backbone} ({weights.url}): {error}. "
                "Continue without them with model.pretrained=false, or save a state dict on a "
                "machine with network access and pass its path as backbone_weights."
            ) from error
    if backbone_weights is not None:
        path = Path(backbone_weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone_weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, not a torch file, or objects a safe load refuses
            raise RuntimeError(
                f"backbone_weights file {path} cannot be read as a state dict ({type(error).__name__}"
                f"). Save one with torch.save(torchvision.models.{backbone}().state_dict(), path); "
                f"never load untrusted files with weights_only=False."
            ) from None
        if not isinstance(state, dict):
            raise RuntimeError(
                f"backbone_weights file {path} holds a {type(state).__name__}, not a state dict."
            )
        # The classifier (fc) is not used by the detector: accept state dicts with or without it.
        missing, unexpected = resnet.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise RuntimeError(
                f"{path} is not a torchvision {backbone} state dict: missing keys {missing[:5]}, "
                f"unexpected keys {unexpected[:5]}. Save one with "
                f"torch.save(torchvision.models.{backbone}().state_dict(), path)."
            )
    return resnet


class TinyDetector(nn.Module):
    """One-stage, anchor-free detector on a single ResNet feature level.

    Args:
        num_classes: C object classes (no background class: the focal loss uses C sigmoids).
        backbone: ``"resnet18"`` or ``"resnet34"``.
        pretrained: load ImageNet weights (needs network access the first time).
        stride: 8 (ResNet up to layer2) or 16 (up to layer3).
        freeze_backbone: start with the backbone frozen (weights and BatchNorm statistics), so
            only the head trains; unfreeze later with :meth:`set_backbone_trainable`.
        head_channels: width of the head's conv tower.
        backbone_weights: path of a locally saved ResNet state dict to load instead.

    ``forward(images [B, 3, H, W] in [0, 1])`` returns ``{"cls_logits": [B, C, H/S, W/S],
    "box_deltas": [B, 4, H/S, W/S]}``; H and W should be multiples of the stride.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        pretrained: bool = False,
        stride: int = 8,
        freeze_backbone: bool = True,
        head_channels: int = 128,
        backbone_weights: str | Path | None = None,
    ):
        super().__init__()
        if stride not in _STRIDES:
            raise ValueError(f"stride must be one of {sorted(_STRIDES)}, got {stride}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.stride = stride
        last_stage, channels = _STRIDES[stride]

        resnet = _build_resnet(backbone, pretrained, backbone_weights)
        stages = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
        stages = stages[: stages.index(last_stage) + 1]
        self.backbone = nn.Sequential(*[getattr(resnet, name) for name in stages])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        self.tower = nn.Sequential(
            nn.Conv2d(channels, head_channels, 3, padding=1),
            nn.GroupNorm(16, head_channels),  # batch-size independent, as in FCOS / RetinaNet heads
            nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, head_channels, 3, padding=1),
            nn.GroupNorm(16, head_channels),
            nn.ReLU(inplace=True),
        )
        self.cls_head = nn.Conv2d(head_channels, num_classes, 3, padding=1)
        self.box_head = nn.Conv2d(head_channels, 4, 3, padding=1)
        self._init_head()
        self.set_backbone_trainable(not freeze_backbone)

    def _init_head(self) -> None:
        for module in [*self.tower, self.cls_head, self.box_head]:
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        # Prior init (Lin et al. 2017, section 4.1): start every cell at p = π = 0.01 "object",
        # b = -log((1 - π) / π), so the thousands of background cells do not produce a huge,
        # destabilising loss in the first iterations.
        nn.init.constant_(
            self.cls_head.bias, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        )

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze (False) or unfreeze (True) the backbone's weights and BatchNorm statistics."""
        self.backbone_trainable = trainable
        for p in self.backbone.parameters():
            p.requires_grad_(trainable)
        self.backbone.train(self.training and trainable)

    def train(self, mode: bool = True) -> TinyDetector:
        """As ``nn.Module.train``, but a frozen backbone stays in eval mode.

        Otherwise BatchNorm would keep updating its running statistics from our small batches
        even though its weights are frozen, silently drifting from the pretrained ones.
        """
        super().train(mode)
        self.backbone.train(mode and self.backbone_trainable)
        return self

    def param_groups(self, backbone_lr: float, head_lr: float) -> list[dict]:
        """Optimizer parameter groups: a smaller learning rate for a pretrained backbone.

        Only trainable parameters are listed; a frozen backbone gets no group.
        """
        head = [p for name, p in self.named_parameters() if not name.startswith("backbone.")]
        groups = [{"params": [p for p in head if p.requires_grad], "lr": head_lr, "name": "head"}]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.insert(0, {"params": backbone, "lr": backbone_lr, "name": "backbone"})
        return groups

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W] in [0, 1], got {tuple(images.shape)}")
        features = self.backbone((images - self.mean) / self.std)  # [B, channels, H/S, W/S]
        features = self.tower(features)  # [B, head_channels, H/S, W/S]
        return {"cls_logits": self.cls_head(features), "box_deltas": self.box_head(features)}
