"""Wrong answers to the exercises of notebooks/10_detection_tiny.py: one per exercise, each a
mistake a learner could make (tests/test_exercise.py runs every exercise with it and expects ✗)."""

import torch


def _iou_without_clamp(boxes1, boxes2):
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).prod(-1)  # negative widths times negative heights: positive "overlap"
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(-1)
    return inter / (area1[:, None] + area2[None, :] - inter)


def _nms_at_or_above(boxes, scores, iou_threshold):
    """NMS that suppresses at IoU >= threshold instead of > threshold."""
    from labkit.detection.boxes import box_iou

    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    for i in order.tolist():
        if all(box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() < iou_threshold for j in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.int64)


WRONG = {
    "my_box_iou": _iou_without_clamp,
    "my_nms": _nms_at_or_above,
}
