"""Detection losses: focal loss or an IoU-aware variant of it (varifocal, quality focal) for
classification, GIoU / DIoU (+ L1) for box regression.

All are pure functions of tensors. ``sigmoid_focal_loss``, ``giou_loss`` and ``diou_loss`` follow
the contracts of ``torchvision.ops.sigmoid_focal_loss``, ``generalized_box_iou_loss`` and
``distance_box_iou_loss`` and agree with them numerically (tests check this), except that the box
losses here default to ``reduction="mean"``. ``varifocal_loss`` and ``quality_focal_loss`` take
soft targets in ``[0, 1]``; where they coincide with torchvision's focal loss (0/1 targets,
negatives), tests compare them with it. ``detection_loss`` puts them together for
:class:`labkit.detection.model.TinyDetector`.

Boxes are xyxy in pixels; see ``labkit.detection.boxes``.
Explained in notebooks/10_detection_tiny.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from labkit.detection.assign import assign_batch, deltas_to_ltrb, grid_centers, ltrb_to_boxes
from labkit.detection.boxes import (
    paired_box_iou,
    paired_center_distance_squared,
    paired_enclosing_box,
)

__all__ = [
    "sigmoid_focal_loss",
    "quality_focal_loss",
    "varifocal_loss",
    "giou_loss",
    "diou_loss",
    "box_regression_loss",
    "classification_loss",
    "detection_loss",
]

REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction``; the mean of an empty tensor is 0 (not NaN) and keeps the graph."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        # An image with no objects gives no boxes to regress: 0, as torchvision does.
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_box_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.shape[-1:] != (4,):
        raise ValueError(
            "box losses compare predicted box i with target box i: pred and target must both be "
            f"[N, 4] xyxy, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def _float(boxes: Tensor) -> Tensor:
    return boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()


# ---------------------------------------------------------------- classification


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection", eq. 5).

    ``FL(p_t) = -α_t (1 - p_t)^γ log(p_t)``: binary cross-entropy scaled down on examples the model
    already gets right (p_t near 1), so the ~thousands of easy background cells of a dense detector
    do not drown out the few objects.

    Args:
        inputs: logits of any shape.
        targets: same shape, 1.0 for the positive class and 0.0 for the negative one.
        alpha: weight α of positives in ``[0, 1]`` (negatives get 1 - α), or -1 for no weighting.
        gamma: focusing exponent γ ≥ 0; γ = 0 gives (α-weighted) cross-entropy.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
        The loss, shaped like ``inputs`` for ``"none"``, else a scalar.
    """
    if inputs.shape != targets.shape:
        raise ValueError(
            f"inputs and targets must have the same shape, got {tuple(inputs.shape)} and "
            f"{tuple(targets.shape)}; build targets with F.one_hot(labels, num_classes).float()"
        )
    if not (0 <= alpha <= 1) and alpha != -1:
        raise ValueError(f"alpha must be in [0, 1], or -1 to switch weighting off; got {alpha}")
    _check_reduction(reduction)
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")  # -log(p_t)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _reduce(loss, reduction)  # unlike torchvision, the mean of an empty input is 0, not NaN


def _check_soft_targets(inputs: Tensor, targets: Tensor) -> None:
    if inputs.shape != targets.shape:
        raise ValueError(
            f"inputs and targets must have the same shape, got {tuple(inputs.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if targets.numel() > 0 and (targets.min() < 0 or targets.max() > 1):
        raise ValueError(
            "IoU-aware targets are soft labels in [0, 1] (the IoU of the predicted box with its "
            f"ground truth on positives, 0 elsewhere), got values in "
            f"[{float(targets.min()):g}, {float(targets.max()):g}]"
        )


def quality_focal_loss(
    inputs: Tensor, targets: Tensor, beta: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Quality focal loss (Li et al. 2020, "Generalized Focal Loss", eq. 5).

    ``QFL(σ) = -|y - σ|^β ((1 - y) log(1 - σ) + y log σ)``: the focal loss with a soft target
    ``y ∈ [0, 1]``, the IoU of the cell's predicted box with its ground truth (0 on background).
    The score learns to *be* the localisation quality, so a well-placed box scores high and a
    sloppy one low, and the scores that rank detections for mAP and pass a threshold mean
    something. The modulating factor ``|y - σ|^β`` is small wherever the score is already near
    its target, as ``(1 - p_t)^γ`` is for the binary focal loss (with y ∈ {0, 1} and no α they
    coincide).

    Args:
        inputs: logits of any shape.
        targets: same shape, soft targets in ``[0, 1]``.
        beta: focusing exponent β ≥ 0 (the paper's default 2).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
        The loss, shaped like ``inputs`` for ``"none"``, else a scalar.
    """
    _check_soft_targets(inputs, targets)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    _check_reduction(reduction)
    sigma = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")  # the (...) term
    loss = ce * (targets - sigma).abs() ** beta
    return _reduce(loss, reduction)


def varifocal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """Varifocal loss (Zhang et al. 2021, "VarifocalNet", eq. 2).

    ``VFL(p, q) = -q (q log p + (1 - q) log(1 - p))`` where the target ``q > 0`` (a positive, q its
    IoU), and ``-α p^γ log(1 - p)`` where ``q = 0``: only negatives are focally down-weighted;
    positives are weighted by their own IoU, so the best-placed boxes dominate the gradient.

    Args:
        inputs: logits of any shape.
        targets: same shape, soft targets in ``[0, 1]`` (0: negative).
        alpha: weight α ≥ 0 of the negatives (the paper's 0.75).
        gamma: focusing exponent γ ≥ 0 on negatives.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
        The loss, shaped like ``inputs`` for ``"none"``, else a scalar.
    """
    _check_soft_targets(inputs, targets)
    if alpha < 0 or gamma < 0:
        raise ValueError(f"alpha and gamma must be >= 0, got alpha={alpha}, gamma={gamma}")
    _check_reduction(reduction)
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    weight = torch.where(targets > 0, targets, alpha * p**gamma)
    return _reduce(ce * weight, reduction)


def classification_loss(
    logits: Tensor, labels: Tensor, ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    """Softmax cross-entropy over classes, the single-label alternative to the focal loss.

    Args:
        logits: ``[N, C]`` class scores.
        labels: ``[N]`` int64 class indices in ``[0, C)``, or ``ignore_index`` to skip a row.
        ignore_index: label value that contributes nothing.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; the mean is over non-ignored rows.

    Returns:
        ``[N]`` for ``"none"``, else a scalar.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 class indices, got {labels.dtype}")
    _check_reduction(reduction)
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction=reduction)


# ---------------------------------------------------------------- box regression


def giou_loss(pred: Tensor, target: Tensor, reduction: str = "mean", eps: float = 1e-7) -> Tensor:
    """``1 - GIoU`` of box i of ``pred`` with box i of ``target`` (Rezatofighi et al. 2019).

    In ``[0, 2]``: 0 for identical boxes, 1 for disjoint boxes that just touch, towards 2 as
    disjoint boxes move apart, so even non-overlapping predictions get a useful gradient.

    Args:
        pred, target: ``[N, 4]`` xyxy boxes.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; an empty mean is 0.
        eps: added to the union and the enclosing area, as in torchvision.

    Returns:
        ``[N]`` for ``"none"``, else a scalar.
    """
    _check_box_pair(pred, target)
    _check_reduction(reduction)
    pred, target = _float(pred), _float(target)
    iou, union = paired_box_iou(pred, target, eps)
    x1c, y1c, x2c, y2c = paired_enclosing_box(pred, target).unbind(-1)
    enclosing_area = (x2c - x1c) * (y2c - y1c)  # |C|
    giou = iou - (enclosing_area - union) / (enclosing_area + eps)
    return _reduce(1 - giou, reduction)


def diou_loss(pred: Tensor, target: Tensor, reduction: str = "mean", eps: float = 1e-7) -> Tensor:
    """``1 - DIoU = 1 - IoU + ρ²/c²`` of box i with box i (Zheng et al. 2020, eq. 6).

    ρ is the distance between the box centres, c the diagonal of the enclosing box: the penalty
    pulls centres together directly, which converges faster than GIoU's area penalty.

    Args:
        pred, target: ``[N, 4]`` xyxy boxes.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; an empty mean is 0.
        eps: added to the union and to c², as in torchvision.

    Returns:
        ``[N]`` for ``"none"``, else a scalar.
    """
    _check_box_pair(pred, target)
    _check_reduction(reduction)
    pred, target = _float(pred), _float(target)
    iou, _ = paired_box_iou(pred, target, eps)
    x1c, y1c, x2c, y2c = paired_enclosing_box(pred, target).unbind(-1)
    diagonal_squared = (x2c - x1c) ** 2 + (y2c - y1c) ** 2 + eps  # c²
    center_distance_squared = paired_center_distance_squared(pred, target)  # ρ²
    return _reduce(1 - iou + center_distance_squared / diagonal_squared, reduction)


def box_regression_loss(
    pred: Tensor,
    target: Tensor,
    kind: str = "giou",
    l1_weight: float = 1.0,
    l1_scale: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """``l1_weight * L1 + (1 - GIoU or 1 - DIoU)`` per box pair, as in DETR-style regressors.

    The IoU term is scale-free but flat in some directions (e.g. a box inside its target); the L1
    term pins every coordinate. L1 is summed over the four coordinates after dividing by
    ``l1_scale`` (e.g. the stride or the image size) so pixel errors and the unitless IoU loss have
    comparable sizes.

    Args:
        pred, target: ``[N, 4]`` xyxy boxes.
        kind: ``"giou"`` or ``"diou"``.
        l1_weight: weight of the L1 term (0 switches it off).
        l1_scale: length that L1 errors are measured in.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
        ``[N]`` for ``"none"``, else a scalar.
    """
    iou_losses = {"giou": giou_loss, "diou": diou_loss}
    if kind not in iou_losses:
        raise ValueError(f"kind must be one of {sorted(iou_losses)}, got {kind!r}")
    _check_box_pair(pred, target)
    _check_reduction(reduction)
    if l1_scale <= 0:
        raise ValueError(f"l1_scale must be positive (a length in pixels), got {l1_scale}")
    pred, target = _float(pred), _float(target)
    l1 = (pred - target).abs().sum(-1) / l1_scale  # [N]
    loss = l1_weight * l1 + iou_losses[kind](pred, target, reduction="none")
    return _reduce(loss, reduction)


# ---------------------------------------------------------------- the detector's loss


def detection_loss(
    outputs: dict[str, Tensor],
    targets: list[dict[str, Tensor]],
    stride: int,
    center_radius: float = 1.5,
    box_loss: str = "giou",
    l1_weight: float = 1.0,
    box_weight: float = 1.0,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    cls_loss: str = "focal",
    qfl_beta: float = 2.0,
) -> tuple[Tensor, dict[str, float]]:
    """Loss of a single-level anchor-free detector (FCOS-style targets, focal-style class loss).

    1. Assign targets to grid cells (:func:`labkit.detection.assign.assign_batch`).
    2. Classification over every cell and class, summed and divided by the number of positive
       cells, as in RetinaNet (normalising by all cells would shrink it to nothing). The target
       of a cell is the one-hot of its class (all zeros for background) for the ``"focal"``
       loss; for the IoU-aware ``"quality_focal"`` and ``"varifocal"`` losses the one is
       replaced by the IoU of the cell's predicted box with its ground truth (detached: the
       score learns the quality, it does not move the box).
    3. Boxes, on positive cells only: ``l1_weight * L1 (in strides) + (1 - GIoU or DIoU)``
       between the decoded prediction and the assigned box, averaged over positives.

    Args:
        outputs: ``{"cls_logits": [B, C, H, W], "box_deltas": [B, 4, H, W]}`` from the model.
        targets: B dicts with ``"boxes"`` ``[K, 4]`` xyxy pixels and ``"labels"`` ``[K]`` int64.
        stride: pixels per grid cell.
        center_radius: centre-sampling radius in strides (see ``assign``).
        box_loss: ``"giou"`` or ``"diou"``.
        l1_weight, box_weight: weight of the L1 term inside the box loss; of the box loss.
        focal_alpha, focal_gamma: focal loss parameters (α, γ of the varifocal loss too).
        cls_loss: ``"focal"`` (binary targets) | ``"quality_focal"`` | ``"varifocal"``.
        qfl_beta: β of the quality focal loss.

    Returns:
        ``(loss, parts)``: the scalar to backpropagate and floats for logging
        (``loss/cls``, ``loss/box``, ``num_positives``).
    """
    cls_logits, box_deltas = outputs["cls_logits"], outputs["box_deltas"]
    if (
        cls_logits.ndim != 4
        or box_deltas.shape[1] != 4
        or box_deltas.shape[2:] != cls_logits.shape[2:]
    ):
        raise ValueError(
            "expected outputs cls_logits [B, C, H, W] and box_deltas [B, 4, H, W], got "
            f"{tuple(cls_logits.shape)} and {tuple(box_deltas.shape)}"
        )
    if len(targets) != cls_logits.shape[0]:
        raise ValueError(f"got {len(targets)} targets for a batch of {cls_logits.shape[0]} images")
    batch, num_classes, height, width = cls_logits.shape
    device = cls_logits.device  # targets usually come from the DataLoader on the CPU
    targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
    cell_class, box_target = assign_batch(
        targets, (height, width), stride, num_classes, center_radius
    )  # [B, H*W], [B, H*W, 4]
    positive = cell_class < num_classes  # [B, H*W]
    num_positives = max(int(positive.sum()), 1)  # an image may have no objects

    # Boxes: decode the positives' predicted distances around their cell centres.
    centers = grid_centers(height, width, stride, device=device)  # [H*W, 2]
    ltrb = deltas_to_ltrb(box_deltas, stride).flatten(2).transpose(1, 2)  # [B, H*W, 4]
    pred_boxes = ltrb_to_boxes(centers.expand(batch, -1, -1)[positive], ltrb[positive])  # [P, 4]
    loss_box = (
        box_regression_loss(
            pred_boxes,
            box_target[positive],
            kind=box_loss,
            l1_weight=l1_weight,
            l1_scale=float(stride),
            reduction="sum",
        )
        / num_positives
    )

    # Classification: one-hot target per cell; background (label == num_classes) is all zeros.
    logits = cls_logits.flatten(2).transpose(1, 2)  # [B, H*W, C]
    one_hot = F.one_hot(cell_class, num_classes + 1)[..., :num_classes].to(logits.dtype)
    if cls_loss == "focal":
        loss_cls = sigmoid_focal_loss(logits, one_hot, focal_alpha, focal_gamma, reduction="sum")
    else:  # IoU-aware: the positive's 1 becomes the IoU its box reaches (GFL / VarifocalNet)
        iou, _ = paired_box_iou(pred_boxes.detach().float(), box_target[positive].float())  # [P]
        quality = torch.zeros_like(one_hot)  # [B, H*W, C]
        quality[positive] = one_hot[positive] * iou.clamp(0, 1).to(logits.dtype)[:, None]
        if cls_loss == "quality_focal":
            loss_cls = quality_focal_loss(logits, quality, qfl_beta, reduction="sum")
        elif cls_loss == "varifocal":
            loss_cls = varifocal_loss(logits, quality, focal_alpha, focal_gamma, reduction="sum")
        else:
            raise ValueError(
                f"cls_loss must be focal, quality_focal or varifocal, got {cls_loss!r}"
            )
    loss_cls = loss_cls / num_positives

    loss = loss_cls + box_weight * loss_box
    parts = {
        "loss/cls": float(loss_cls.detach()),
        "loss/box": float(loss_box.detach()),
        "num_positives": float(positive.sum()),
    }
    return loss, parts
