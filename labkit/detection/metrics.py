"""Detection metrics: matching detections to ground truth, precision/recall, AP and mAP (VOC).

How a detection counts (PASCAL VOC rules, Everingham et al. 2010, section 4.4):

1. Per class, all detections of the dataset are visited from the highest score down.
2. A detection is matched to the ground-truth (GT) box of its image it overlaps most. It is a
   true positive (TP) when that IoU is at least the threshold (0.5 in VOC) and that GT box was
   not matched before; otherwise it is a false positive (FP): a second detection of an object
   already found is a duplicate, even if it overlaps another, unmatched GT box less.
3. Precision after k detections is TP_k / k, recall is TP_k / (number of GT boxes).

Average precision (AP) is the area under the precision-recall curve with "all-point"
interpolation (VOC 2010 onwards): precision at recall r is replaced by the best precision at any
recall >= r (so the curve only falls), and the area is summed over the recall steps.
The mean over classes is mAP. "Difficult" VOC objects are not treated specially here.

Explained in notebooks/10_detection_tiny.py.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from labkit.detection.boxes import box_iou

__all__ = ["match_detections", "precision_recall", "average_precision", "mean_average_precision"]


def match_detections(
    pred_boxes: Tensor, pred_scores: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5
) -> Tensor:
    """TP/FP flag of each detection of one class in one image (rule 2 above).

    Args:
        pred_boxes: ``[P, 4]`` xyxy detections.
        pred_scores: ``[P]`` their scores.
        gt_boxes: ``[G, 4]`` xyxy GT boxes of the same class.
        iou_threshold: minimum IoU of a true positive.

    Returns:
        ``[P]`` bool, True for a true positive, in the order of ``pred_boxes``.
    """
    is_tp = torch.zeros(pred_boxes.shape[0], dtype=torch.bool)
    if pred_boxes.shape[0] == 0 or gt_boxes.shape[0] == 0:
        return is_tp
    iou = box_iou(pred_boxes, gt_boxes)  # [P, G]
    best_iou, best_gt = iou.max(dim=1)  # [P]: the GT each detection overlaps most
    matched = torch.zeros(gt_boxes.shape[0], dtype=torch.bool)
    for p in torch.sort(pred_scores, descending=True, stable=True).indices.tolist():
        g = int(best_gt[p])
        if best_iou[p] >= iou_threshold and not matched[g]:
            is_tp[p] = True
            matched[g] = True
    return is_tp


def precision_recall(is_tp: Tensor, scores: Tensor, num_gt: int) -> tuple[Tensor, Tensor]:
    """Precision and recall after each detection, best score first.

    Args:
        is_tp: ``[P]`` bool TP flags (from :func:`match_detections`, any order).
        scores: ``[P]`` detection scores, used to sort.
        num_gt: number of GT boxes of the class.

    Returns:
        ``(precision, recall)``, each ``[P]`` float64, in decreasing score order.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    tp = is_tp[order].double().cumsum(0)  # TP_k
    k = torch.arange(1, len(order) + 1, dtype=torch.float64)
    precision = tp / k
    recall = tp / num_gt if num_gt > 0 else torch.zeros_like(tp)
    return precision, recall


def average_precision(precision: Tensor, recall: Tensor) -> float:
    """Area under the precision-recall curve, VOC all-point interpolation.

    Args:
        precision, recall: ``[P]`` in decreasing score order (recall non-decreasing).

    Returns:
        AP in ``[0, 1]``; 0 for no detections.
    """
    # Sentinels: recall runs from 0 to 1, precision is 0 past the last detection.
    mrec = torch.cat(
        [
            torch.tensor([0.0], dtype=torch.float64),
            recall.double(),
            torch.ones(1, dtype=torch.float64),
        ]
    )
    mpre = torch.cat(
        [
            torch.zeros(1, dtype=torch.float64),
            precision.double(),
            torch.zeros(1, dtype=torch.float64),
        ]
    )
    # Interpolate: p_interp(r) = max precision at recall >= r (running max from the right).
    mpre = mpre.flip(0).cummax(0).values.flip(0)
    # Sum rectangle areas where recall changes: Σ (r_{k+1} - r_k) * p_interp(r_{k+1}).
    steps = (mrec[1:] != mrec[:-1]).nonzero().squeeze(1)
    return float(((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]).sum())


def mean_average_precision(
    preds: list[dict[str, Tensor]],
    targets: list[dict[str, Tensor]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> dict:
    """VOC-style mAP over a dataset.

    Args:
        preds: one dict per image: ``"boxes"`` ``[D, 4]`` xyxy, ``"scores"`` ``[D]``,
            ``"labels"`` ``[D]`` int64 (e.g. from ``decode_predictions``).
        targets: one dict per image: ``"boxes"`` ``[G, 4]`` xyxy, ``"labels"`` ``[G]`` int64.
        num_classes: classes are ``0 .. num_classes - 1``.
        iou_threshold: minimum IoU of a true positive.

    Returns:
        ``{"map": float, "ap": [C] list of float, "num_gt": [C] list of int,
        "pr_curves": [C] list of (precision, recall) tensors}``. A class without GT boxes has
        AP ``nan`` and is left out of the mean (its detections can only be false positives, but
        VOC defines no AP for it); ``map`` is ``nan`` when no class has GT boxes.
    """
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets: one per image")
    aps, num_gts, curves = [], [], []
    for c in range(num_classes):
        flags, scores, num_gt = [], [], 0
        for pred, target in zip(preds, targets, strict=True):
            pred_mask = pred["labels"] == c
            gt_boxes = target["boxes"][target["labels"] == c].cpu()
            num_gt += gt_boxes.shape[0]
            boxes_c, scores_c = pred["boxes"][pred_mask].cpu(), pred["scores"][pred_mask].cpu()
            flags.append(match_detections(boxes_c, scores_c, gt_boxes, iou_threshold))
            scores.append(scores_c)
        precision, recall = precision_recall(torch.cat(flags), torch.cat(scores), num_gt)
        aps.append(average_precision(precision, recall) if num_gt > 0 else math.nan)
        num_gts.append(num_gt)
        curves.append((precision, recall))
    defined = [ap for ap in aps if not math.isnan(ap)]
    mean_ap = sum(defined) / len(defined) if defined else math.nan
    return {"map": mean_ap, "ap": aps, "num_gt": num_gts, "pr_curves": curves}
