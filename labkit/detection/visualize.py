"""Drawing boxes on images: ground truth in green, predictions in red with class and score.

Everything returns uint8 ``[3, H, W]`` tensors, which ``SummaryWriter.add_image`` logs directly
and ``plt.imshow(image.permute(1, 2, 0))`` shows. Explained in notebooks/10_detection_tiny.py.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid

__all__ = ["to_uint8", "draw_detections", "prediction_grid"]

GT_COLOR = (0, 200, 0)
PRED_COLOR = (230, 30, 30)


def to_uint8(image: Tensor) -> Tensor:
    """``[3, H, W]`` float in ``[0, 1]`` (or uint8) → uint8 ``[3, H, W]``."""
    if image.dtype == torch.uint8:
        return image
    return (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def _name(label: int, class_names) -> str:
    return class_names[label] if class_names is not None else str(label)


def draw_detections(
    image: Tensor,
    prediction: dict[str, Tensor] | None = None,
    target: dict[str, Tensor] | None = None,
    class_names=None,
    score_thresh: float = 0.3,
    width: int = 2,
) -> Tensor:
    """Draw ground-truth and predicted boxes on one image.

    Args:
        image: ``[3, H, W]`` float in ``[0, 1]`` or uint8.
        prediction: ``{"boxes": [D, 4] xyxy, "scores": [D], "labels": [D]}``; boxes scoring below
            ``score_thresh`` are not drawn.
        target: ``{"boxes": [K, 4] xyxy, "labels": [K]}``.
        class_names: names indexed by label (default: the label number).
        score_thresh: lowest score drawn.
        width: line width in pixels.

    Returns:
        uint8 ``[3, H, W]``.
    """
    canvas = to_uint8(image)
    if target is not None and target["boxes"].numel() > 0:
        names = [_name(int(label), class_names) for label in target["labels"]]
        canvas = draw_bounding_boxes(
            canvas, target["boxes"].detach().cpu().float(), names, colors=GT_COLOR, width=width
        )
    if prediction is not None:
        shown = prediction["scores"] >= score_thresh
        boxes = prediction["boxes"][shown].detach().cpu().float()
        if boxes.numel() > 0:
            names = [
                f"{_name(int(label), class_names)} {float(score):.2f}"
                for label, score in zip(
                    prediction["labels"][shown], prediction["scores"][shown], strict=True
                )
            ]
            canvas = draw_bounding_boxes(canvas, boxes, names, colors=PRED_COLOR, width=width)
    return canvas


def prediction_grid(
    images: Tensor,
    predictions: list[dict[str, Tensor]] | None = None,
    targets: list[dict[str, Tensor]] | None = None,
    class_names=None,
    score_thresh: float = 0.3,
    nrow: int = 4,
) -> Tensor:
    """A grid of images with their boxes, for ``SummaryWriter.add_image(tag, grid, step)``.

    Args:
        images: ``[B, 3, H, W]`` float in ``[0, 1]`` or uint8.
        predictions, targets: B dicts each, or None.
        class_names, score_thresh: as in :func:`draw_detections`.
        nrow: images per row.

    Returns:
        uint8 ``[3, H_grid, W_grid]``.
    """
    batch = images.shape[0]
    for name, items in (("predictions", predictions), ("targets", targets)):
        if items is not None and len(items) != batch:
            raise ValueError(f"got {len(items)} {name} for {batch} images")
    drawn = [
        draw_detections(
            images[i],
            predictions[i] if predictions is not None else None,
            targets[i] if targets is not None else None,
            class_names,
            score_thresh,
        )
        for i in range(batch)
    ]
    return make_grid(torch.stack(drawn), nrow=nrow, padding=2, pad_value=255)
