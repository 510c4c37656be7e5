"""VOC-style matching, precision/recall and AP on small cases worked out by hand."""

import math

import pytest
import torch

from labkit.detection.metrics import (
    average_precision,
    match_detections,
    mean_average_precision,
    precision_recall,
)


def image(boxes, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def detections(boxes, scores, labels):
    return {**image(boxes, labels), "scores": torch.tensor(scores)}


A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 30.0, 30.0]
FAR = [50.0, 50.0, 60.0, 60.0]


def test_one_false_positive_between_two_hits():
    # 2 GT boxes; detections by score: hit A, miss (FAR), hit B.
    # precision = [1/1, 1/2, 2/3], recall = [1/2, 1/2, 2/2].
    # Interpolated precision: 1 up to recall 1/2, then 2/3 → AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    preds = [detections([A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    targets = [image([A, B], [0, 0])]
    result = mean_average_precision(preds, targets, num_classes=1)
    assert result["ap"][0] == pytest.approx(5 / 6)
    assert result["map"] == pytest.approx(5 / 6)
    precision, recall = result["pr_curves"][0]
    torch.testing.assert_close(precision, torch.tensor([1, 0.5, 2 / 3], dtype=torch.float64))
    torch.testing.assert_close(recall, torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))


def test_duplicate_detection_is_a_false_positive():
    # Two detections of the same object: the second is a duplicate (FP), but the only GT is found
    # at the first detection, when precision is 1 → AP = 1.
    is_tp = match_detections(torch.tensor([A, A]), torch.tensor([0.9, 0.8]), torch.tensor([A]))
    assert is_tp.tolist() == [True, False]
    precision, recall = precision_recall(is_tp, torch.tensor([0.9, 0.8]), num_gt=1)
    assert average_precision(precision, recall) == pytest.approx(1.0)


def test_voc_rule_does_not_fall_back_to_the_second_best_gt():
    # GT A = [0,0,10,10] and A' = [0,0,10,12]. Detection 1 = A (IoU 1 with A) takes A. Detection 2 =
    # [0,0,10,10.5] overlaps A most (100/105 ≈ 0.95) and A' less (105/120 = 0.875): its best GT is
    # taken, so under VOC rules it is a false positive although A' is unmatched.
    # precision = [1, 1/2], recall = [1/2, 1/2] → AP = 0.5 * 1 = 0.5.
    gt = torch.tensor([A, [0.0, 0.0, 10.0, 12.0]])
    dets = torch.tensor([A, [0.0, 0.0, 10.0, 10.5]])
    is_tp = match_detections(dets, torch.tensor([0.9, 0.8]), gt)
    assert is_tp.tolist() == [True, False]
    precision, recall = precision_recall(is_tp, torch.tensor([0.9, 0.8]), num_gt=2)
    assert average_precision(precision, recall) == pytest.approx(0.5)


def test_iou_threshold_is_inclusive():
    # [0,0,10,10] vs [0,0,10,20]: IoU = 100/200 = 0.5 exactly, a hit at threshold 0.5 (VOC: >=).
    is_tp = match_detections(
        torch.tensor([[0.0, 0.0, 10.0, 20.0]]), torch.tensor([1.0]), torch.tensor([A]), 0.5
    )
    assert is_tp.tolist() == [True]


def test_map_over_classes_and_images():
    # Class 0: image 1 finds its only GT → AP 1.  Class 1: one GT per image, only image 2's is
    # found, by the lower-scored detection, after a false positive: precision [0, 1/2],
    # recall [0, 1/2] → AP = 0.5 * 1/2 = 0.25.  Class 2: no GT anywhere → AP nan, left out.
    # mAP = (1 + 0.25) / 2 = 0.625.
    preds = [
        detections([A, FAR], [0.9, 0.95], [0, 1]),
        detections([B, FAR], [0.6, 0.3], [1, 2]),
    ]
    targets = [image([A, B], [0, 1]), image([B], [1])]
    result = mean_average_precision(preds, targets, num_classes=3)
    assert result["ap"][0] == pytest.approx(1.0)
    assert result["ap"][1] == pytest.approx(0.25)
    assert math.isnan(result["ap"][2])
    assert result["num_gt"] == [1, 2, 0]
    assert result["map"] == pytest.approx(0.625)


def test_no_detections_gives_zero_ap_and_mismatched_lengths_fail():
    empty = detections([], [], [])
    assert mean_average_precision([empty], [image([A], [0])], 1)["ap"][0] == 0.0
    with pytest.raises(ValueError, match="one per image"):
        mean_average_precision([empty, empty], [image([A], [0])], 1)
