"""Running a trained detector over a data set: predictions, mAP@0.5 and one operating point.

``predict`` decodes and NMS-filters the model's output for every image of a loader;
``evaluate_detector`` turns those into VOC mAP@0.5, per-class AP and precision/recall at one score
threshold. Used by P10's task and by P40 (active learning scores the pool with ``predict``).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader

from labkit.detection.assign import decode_predictions
from labkit.detection.metrics import match_detections, mean_average_precision
from labkit.detection.model import TinyDetector


@torch.no_grad()
def predict(
    model: TinyDetector,
    loader: DataLoader,
    device: torch.device,
    score_thresh: float = 0.05,
    nms_iou: float = 0.5,
    max_dets: int = 100,
) -> tuple[list[dict], list[dict]]:
    """Detections and targets of every image of ``loader`` (on the CPU), in loader order."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for images, batch_targets in loader:
        out = model(images.to(device))
        preds += decode_predictions(
            out["cls_logits"].float(),
            out["box_deltas"].float(),
            model.stride,
            score_thresh=score_thresh,
            iou_threshold=nms_iou,
            max_dets=max_dets,
        )
        targets += batch_targets
    model.train(was_training)
    return [{k: v.cpu() for k, v in p.items()} for p in preds], targets


def precision_recall_at(
    preds: list[dict],
    targets: list[dict],
    num_classes: int,
    score_thresh: float = 0.5,
    iou_threshold: float = 0.5,
) -> tuple[float, float]:
    """Precision and recall of the detections scoring at least ``score_thresh``.

    One operating point of the precision-recall curve, pooled over classes: the numbers a
    robot using the detector with that threshold would see. Precision is 0 with no detections.
    """
    tp = num_dets = num_gt = 0
    for pred, target in zip(preds, targets, strict=True):
        for c in range(num_classes):
            kept = (pred["labels"] == c) & (pred["scores"] >= score_thresh)
            gt_boxes = target["boxes"][target["labels"] == c]
            is_tp = match_detections(
                pred["boxes"][kept], pred["scores"][kept], gt_boxes, iou_threshold
            )
            tp, num_dets, num_gt = (
                tp + int(is_tp.sum()),
                num_dets + int(kept.sum()),
                num_gt + len(gt_boxes),
            )
    return (tp / num_dets if num_dets else 0.0), (tp / num_gt if num_gt else 0.0)


def evaluate_detector(
    model: TinyDetector,
    loader: DataLoader,
    device: torch.device,
    num_classes: int,
    class_names: tuple[str, ...] | None = None,
    eval_cfg: dict | None = None,
) -> dict[str, float]:
    """mAP@0.5 (VOC rules), per-class AP and precision/recall at one score threshold.

    Returns ``{"map50", "precision", "recall", "ap50/<class>"...}`` (the trainer adds ``eval/``).
    """
    settings = eval_cfg or {}
    preds, targets = predict(
        model,
        loader,
        device,
        settings.get("score_thresh", 0.05),
        settings.get("nms_iou", 0.5),
        settings.get("max_dets", 100),
    )
    iou_threshold = settings.get("iou_threshold", 0.5)
    result = mean_average_precision(preds, targets, num_classes, iou_threshold)
    precision, recall = precision_recall_at(
        preds, targets, num_classes, settings.get("report_score", 0.5), iou_threshold
    )
    names = class_names or tuple(str(c) for c in range(num_classes))
    per_class = {f"ap50/{n}": ap for n, ap in zip(names, result["ap"]) if not math.isnan(ap)}
    return {"map50": result["map"], "precision": precision, "recall": recall, **per_class}
