"""Anchor-free target assignment on one feature grid, and decoding predictions back to boxes.

The detector predicts, for every cell of a stride-S grid, class scores and the distances
``(l, t, r, b)`` from the cell centre to the four sides of a box (FCOS, Tian et al. 2019):

    box = (cx - l, cy - t, cx + r, cy + b),   cell centre (cx, cy) = ((j + 0.5) S, (i + 0.5) S)

Which cells learn which ground-truth (GT) box:

* **Centre sampling** (FCOS, section "center-ness" / later "center sampling"): a cell is positive
  for a GT box when its centre lies inside the box *and* within ``center_radius * S`` of the box
  centre along both axes. Only cells near the middle of an object learn to detect it: their
  features see the whole object, and their ``l, t, r, b`` targets are balanced, whereas a cell at
  the edge of a box mostly sees background. One level only, so there is no FCOS size range per
  level; a radius of 1.5 strides gives a 3x3 block of positives for objects large enough.
* **Ambiguity**: a cell inside several candidate boxes is given the *smallest-area* box, as in
  FCOS: the large box still has other cells around its centre, the small one may have no other.
* Objects smaller than a stride can end up with no positive cell (no cell centre inside them);
  choose the stride so that the smallest object spans at least one cell (ShapesDataset's default
  objects, 16-48 px in 128-px images, span 2-6 cells at stride 8).

Cells are flattened row-major: cell ``(i, j)`` of an ``H x W`` grid is index ``i * W + j``.
Background cells have class ``num_classes``. Explained in notebooks/10_detection_tiny.py.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from labkit.detection.nms import batched_nms

__all__ = [
    "grid_centers",
    "boxes_to_ltrb",
    "ltrb_to_boxes",
    "deltas_to_ltrb",
    "assign_targets",
    "assign_batch",
    "decode_predictions",
]

# exp() of a raw output above this would be a side longer than 1000/16 = 62.5 strides: clip, as
# torchvision's box coders do, so one bad step early in training cannot overflow to inf.
MAX_DELTA = math.log(1000.0 / 16)


def grid_centers(height: int, width: int, stride: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel centres of the cells of an ``H x W`` grid with the given stride.

    Returns:
        ``[H * W, 2]`` ``(x, y)``, row-major: ``((j + 0.5) * stride, (i + 0.5) * stride)``.
    """
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * stride  # [H]
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * stride  # [W]
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
    return torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)


def boxes_to_ltrb(centers: Tensor, boxes: Tensor) -> Tensor:
    """Distances ``(l, t, r, b)`` from points to box sides. ``[..., 2]``, ``[..., 4]`` → ``[..., 4]``.

    All four are positive exactly when the point is inside the box.
    """
    x, y = centers.unbind(-1)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=-1)


def ltrb_to_boxes(centers: Tensor, ltrb: Tensor) -> Tensor:
    """Inverse of :func:`boxes_to_ltrb`: ``[..., 2]``, ``[..., 4]`` → xyxy ``[..., 4]``."""
    x, y = centers.unbind(-1)
    left, top, right, bottom = ltrb.unbind(-1)
    return torch.stack([x - left, y - top, x + right, y + bottom], dim=-1)


def deltas_to_ltrb(box_deltas: Tensor, stride: int) -> Tensor:
    """Raw regression outputs → positive side distances in pixels: ``exp(delta) * stride``.

    ``exp`` keeps every distance positive with a gradient everywhere (``relu`` would stop learning
    for a cell whose output went negative), and multiplying by the stride lets the network predict
    numbers near 1 whatever the grid: a raw output of 0 is a box one stride from the centre on
    each side. Any shape; elementwise.
    """
    return torch.exp(box_deltas.clamp(max=MAX_DELTA)) * stride


def assign_targets(
    boxes: Tensor,
    labels: Tensor,
    grid_size: tuple[int, int],
    stride: int,
    num_classes: int,
    center_radius: float = 1.5,
) -> tuple[Tensor, Tensor]:
    """Targets of every grid cell of one image (see the module docstring for the rule).

    Args:
        boxes: ``[K, 4]`` GT boxes, xyxy pixels (K may be 0).
        labels: ``[K]`` int64 classes in ``[0, num_classes)``.
        grid_size: ``(H, W)`` of the feature grid.
        stride: pixels per cell.
        num_classes: C; background cells get class C.
        center_radius: positive cells lie within this many strides of the box centre.

    Returns:
        ``(cls_target, box_target)``: ``[H * W]`` int64 class per cell (C = background) and
        ``[H * W, 4]`` float xyxy box per cell (zeros on background cells).
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
        raise ValueError(
            f"expected boxes [K, 4] and labels [K], got {tuple(boxes.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if labels.numel() > 0 and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be in [0, {num_classes}) for num_classes={num_classes}, got "
            f"{labels.unique().tolist()}"
        )
    height, width = grid_size
    centers = grid_centers(height, width, stride, device=boxes.device)  # [HW, 2]
    num_cells = centers.shape[0]
    boxes = boxes.to(centers.dtype)
    cls_target = torch.full((num_cells,), num_classes, dtype=torch.int64, device=boxes.device)
    box_target = torch.zeros(num_cells, 4, dtype=centers.dtype, device=boxes.device)
    if boxes.shape[0] == 0:
        return cls_target, box_target

    # Candidate (cell, box) pairs: inside the box and near its centre.
    ltrb = boxes_to_ltrb(centers[:, None, :], boxes[None, :, :])  # [HW, K, 4]
    inside_box = ltrb.min(dim=-1).values > 0  # [HW, K]
    box_centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # [K, 2]
    offset = (centers[:, None, :] - box_centers[None, :, :]).abs()  # [HW, K, 2]
    near_center = (offset < center_radius * stride).all(dim=-1)  # [HW, K]
    candidate = inside_box & near_center

    # Ambiguity: each cell takes its smallest candidate box.
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # [K]
    area_if_candidate = torch.where(
        candidate, areas[None, :], torch.full_like(candidate, math.inf, dtype=areas.dtype)
    )
    min_area, best_box = area_if_candidate.min(dim=1)  # [HW], [HW]
    positive = torch.isfinite(min_area)
    cls_target[positive] = labels[best_box[positive]]
    box_target[positive] = boxes[best_box[positive]]
    return cls_target, box_target


def assign_batch(
    targets: list[dict[str, Tensor]],
    grid_size: tuple[int, int],
    stride: int,
    num_classes: int,
    center_radius: float = 1.5,
) -> tuple[Tensor, Tensor]:
    """:func:`assign_targets` for a batch. ``targets``: B dicts with ``"boxes"``, ``"labels"``.

    Returns:
        ``[B, H * W]`` int64 classes and ``[B, H * W, 4]`` xyxy boxes.
    """
    per_image = [
        assign_targets(t["boxes"], t["labels"], grid_size, stride, num_classes, center_radius)
        for t in targets
    ]
    cls_targets, box_targets = zip(*per_image, strict=True)
    return torch.stack(cls_targets), torch.stack(box_targets)


@torch.no_grad()
def decode_predictions(
    cls_logits: Tensor,
    box_deltas: Tensor,
    stride: int,
    score_thresh: float = 0.05,
    iou_threshold: float = 0.5,
    max_dets: int = 100,
    pre_nms_top_k: int = 1000,
    image_size: tuple[int, int] | None = None,
) -> list[dict[str, Tensor]]:
    """Turn the detector's dense outputs into a short list of boxes per image.

    Every (cell, class) pair is a candidate with score ``sigmoid(logit)``; candidates below
    ``score_thresh`` are dropped, the best ``pre_nms_top_k`` are decoded to boxes, per-class NMS
    removes duplicates, and the best ``max_dets`` remain.

    Args:
        cls_logits: ``[B, C, H, W]`` class logits.
        box_deltas: ``[B, 4, H, W]`` raw box outputs (see :func:`deltas_to_ltrb`).
        stride: pixels per cell.
        score_thresh: minimum score kept.
        iou_threshold: NMS threshold, per class.
        max_dets: most detections returned per image.
        pre_nms_top_k: most candidates passed to NMS per image (bounds its cost).
        image_size: ``(height, width)`` to clip boxes to; by default the grid's ``H*S x W*S``.

    Returns:
        B dicts: ``"boxes"`` ``[D, 4]`` xyxy pixels, ``"scores"`` ``[D]``, ``"labels"`` ``[D]``
        int64, by decreasing score.
    """
    batch, num_classes, height, width = cls_logits.shape
    if box_deltas.shape != (batch, 4, height, width):
        raise ValueError(
            f"box_deltas must be [B, 4, H, W] = {(batch, 4, height, width)}, "
            f"got {tuple(box_deltas.shape)}"
        )
    img_h, img_w = image_size if image_size is not None else (height * stride, width * stride)
    centers = grid_centers(height, width, stride, device=cls_logits.device)  # [HW, 2]
    scores_all = cls_logits.sigmoid().flatten(2).transpose(1, 2)  # [B, HW, C]
    ltrb_all = deltas_to_ltrb(box_deltas, stride).flatten(2).transpose(1, 2)  # [B, HW, 4]

    detections = []
    for scores, ltrb in zip(scores_all, ltrb_all, strict=True):
        flat = scores.flatten()  # [HW * C], index = cell * C + class
        candidates = (flat > score_thresh).nonzero().squeeze(1)
        top = flat[candidates].topk(min(pre_nms_top_k, candidates.numel())).indices
        candidates = candidates[top]
        cells, labels = candidates // num_classes, candidates % num_classes
        boxes = ltrb_to_boxes(centers[cells], ltrb[cells])  # [D, 4]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, img_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, img_h)
        keep = batched_nms(boxes, flat[candidates], labels, iou_threshold)[:max_dets]
        detections.append(
            {"boxes": boxes[keep], "scores": flat[candidates][keep], "labels": labels[keep]}
        )
    return detections
