"""Box geometry: format conversion, area, and IoU / GIoU / DIoU between boxes.

Conventions used across ``labkit.detection``:

* Boxes are ``(x1, y1, x2, y2)`` ("xyxy") in pixels, with ``x1 <= x2`` and ``y1 <= y2``; x grows
  to the right and y grows down, as in image arrays. ``(cx, cy, w, h)`` ("cxcywh") is the centre
  and size of the same box.
* Pairwise functions take ``[N, 4]`` and ``[M, 4]`` and return an ``[N, M]`` matrix (row i is
  box i of the first set). Paired ("elementwise") functions take ``[N, 4]`` and ``[N, 4]`` and
  return ``[N]``: box i of one set against box i of the other, as a regression loss needs.
* Integer and half-precision boxes are computed in float32: an area of int16 or float16
  coordinates overflows quickly (300 * 300 > 32767), and IoU is a fraction anyway.
* Degenerate boxes (zero width or height) never produce NaN: where a union or an enclosing area is
  exactly zero, the ratio is defined as 0. Everywhere else the arithmetic is the same, operation for
  operation, as ``torchvision.ops``, so the results agree bit for bit (tests check this).

Explained in notebooks/10_detection_tiny.py.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_xyxy_to_cxcywh",
    "box_cxcywh_to_xyxy",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "paired_box_iou",
    "paired_enclosing_box",
    "paired_center_distance_squared",
]


def _check_boxes(boxes: Tensor, name: str) -> None:
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(
            f"{name} must be a Tensor of shape [N, 4] holding (x1, y1, x2, y2) boxes, got {shape}. "
            "A single box needs a leading dimension: box[None]."
        )


def _upcast(boxes: Tensor) -> Tensor:
    """float32/float64 stay as they are; ints and half/bfloat16 become float32 (no overflow)."""
    if boxes.dtype in (torch.float32, torch.float64):
        return boxes
    return boxes.float()


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator``, but 0 where the denominator is 0.

    Only used where ``denominator == 0`` implies ``numerator == 0`` (an empty union has no
    intersection), so 0 is the natural value. Dividing by ``where(den > 0, den, 1)`` instead of
    masking the quotient keeps the backward pass free of NaN as well.
    """
    return numerator / torch.where(denominator > 0, denominator, torch.ones_like(denominator))


# ---------------------------------------------------------------- formats and areas


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` → ``(cx, cy, w, h)``. ``boxes``: ``[..., 4]`` → ``[..., 4]``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` → ``(x1, y1, x2, y2)``. ``boxes``: ``[..., 4]`` → ``[..., 4]``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area ``(x2 - x1) * (y2 - y1)`` of xyxy boxes. ``[..., 4]`` → ``[...]`` (float)."""
    boxes = _upcast(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


# ------------------------------------------------------------ pairwise: [N, 4] x [M, 4] -> [N, M]


def _pairwise_inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of every pair. ``[N, 4]``, ``[M, 4]`` → two ``[N, M]``."""
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    x1a, y1a, x2a, y2a = boxes1.unbind(-1)  # each [N]
    x1b, y1b, x2b, y2b = boxes2.unbind(-1)  # each [M]
    # The intersection is the box (max of the x1s, max of the y1s, min of the x2s, min of the y2s);
    # it is empty (width or height clamped to 0) when the boxes do not overlap.
    w = (torch.minimum(x2a[:, None], x2b) - torch.maximum(x1a[:, None], x1b)).clamp(min=0)  # [N, M]
    h = (torch.minimum(y2a[:, None], y2b) - torch.maximum(y1a[:, None], y1b)).clamp(min=0)  # [N, M]
    inter = w * h
    union = box_area(boxes1)[:, None] + box_area(boxes2) - inter  # |A ∪ B| = |A| + |B| - |A ∩ B|
    return inter, union


def _pairwise_enclosing_wh(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height of the smallest box enclosing each pair. Two ``[N, M]``."""
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    x1a, y1a, x2a, y2a = boxes1.unbind(-1)
    x1b, y1b, x2b, y2b = boxes2.unbind(-1)
    w = (torch.maximum(x2a[:, None], x2b) - torch.minimum(x1a[:, None], x1b)).clamp(min=0)
    h = (torch.maximum(y2a[:, None], y2b) - torch.minimum(y1a[:, None], y1b)).clamp(min=0)
    return w, h


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair of boxes.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[M, 4]`` xyxy boxes.

    Returns:
        ``[N, M]`` float tensor, ``IoU(A, B) = |A ∩ B| / |A ∪ B|`` in ``[0, 1]``; 0 for a pair of
        degenerate boxes whose union is empty. ``[0, M]`` or ``[N, 0]`` when a set is empty.
    """
    inter, union = _pairwise_inter_union(boxes1, boxes2)
    return _ratio(inter, union)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU (Rezatofighi et al. 2019, "Generalized Intersection over Union", Alg. 1).

    ``GIoU(A, B) = IoU(A, B) - |C \\ (A ∪ B)| / |C|``, with C the smallest box enclosing A and B.
    Unlike IoU it keeps falling as disjoint boxes move apart, so it gives a gradient where IoU is 0.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[M, 4]`` xyxy boxes.

    Returns:
        ``[N, M]`` float tensor in ``[-1, 1]``.
    """
    inter, union = _pairwise_inter_union(boxes1, boxes2)
    iou = _ratio(inter, union)
    enclosing_w, enclosing_h = _pairwise_enclosing_wh(boxes1, boxes2)
    enclosing_area = enclosing_w * enclosing_h  # |C|
    return iou - _ratio(enclosing_area - union, enclosing_area)


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Distance IoU (Zheng et al. 2020, "Distance-IoU Loss", eq. 6).

    ``DIoU(A, B) = IoU(A, B) - ρ²(a, b) / c²``: ρ is the distance between the box centres a and b,
    c the diagonal of the smallest enclosing box. It rewards moving centres together directly.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[M, 4]`` xyxy boxes.
        eps: added to c² so identical degenerate boxes (c = 0) do not divide by zero.

    Returns:
        ``[N, M]`` float tensor in ``[-1, 1]``.
    """
    iou = box_iou(boxes1, boxes2)
    enclosing_w, enclosing_h = _pairwise_enclosing_wh(boxes1, boxes2)
    diagonal_squared = enclosing_w**2 + enclosing_h**2 + eps  # c²
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    cx1, cy1 = (boxes1[:, 0] + boxes1[:, 2]) / 2, (boxes1[:, 1] + boxes1[:, 3]) / 2  # [N]
    cx2, cy2 = (boxes2[:, 0] + boxes2[:, 2]) / 2, (boxes2[:, 1] + boxes2[:, 3]) / 2  # [M]
    center_distance_squared = (cx1[:, None] - cx2) ** 2 + (cy1[:, None] - cy2) ** 2  # ρ², [N, M]
    return iou - center_distance_squared / diagonal_squared


# ---------------------------------------------------------------- paired: [N, 4] x [N, 4] -> [N]


def _check_paired(boxes1: Tensor, boxes2: Tensor) -> None:
    if boxes1.shape != boxes2.shape or boxes1.shape[-1:] != (4,):
        raise ValueError(
            "paired box functions compare box i with box i, so both inputs must have the same "
            f"shape [..., 4]; got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}. "
            "For all pairs of two sets use box_iou / generalized_box_iou instead."
        )


def paired_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """IoU of box i with box i, plus the union, as the IoU-based losses need them.

    Follows ``torchvision.ops``' loss convention ``IoU = |A ∩ B| / (|A ∪ B| + eps)`` so the losses
    built on it agree with torchvision's to rounding and stay finite for degenerate boxes.

    Args:
        boxes1, boxes2: ``[..., 4]`` xyxy boxes of the same shape.

    Returns:
        ``(iou, union)``, each ``[...]``.
    """
    _check_paired(boxes1, boxes2)
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    x1a, y1a, x2a, y2a = boxes1.unbind(-1)
    x1b, y1b, x2b, y2b = boxes2.unbind(-1)
    w = (torch.minimum(x2a, x2b) - torch.maximum(x1a, x1b)).clamp(min=0)
    h = (torch.minimum(y2a, y2b) - torch.maximum(y1a, y1b)).clamp(min=0)
    inter = w * h
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter / (union + eps), union


def paired_enclosing_box(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Smallest box enclosing box i of each set. ``[..., 4]`` x ``[..., 4]`` → ``[..., 4]`` xyxy."""
    _check_paired(boxes1, boxes2)
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    top_left = torch.minimum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
    return torch.cat([top_left, bottom_right], dim=-1)


def paired_center_distance_squared(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Squared distance ρ² between the centres of box i of each set. ``[..., 4]`` x2 → ``[...]``."""
    _check_paired(boxes1, boxes2)
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    center1 = (boxes1[..., :2] + boxes1[..., 2:]) / 2
    center2 = (boxes2[..., :2] + boxes2[..., 2:]) / 2
    return ((center1 - center2) ** 2).sum(-1)
