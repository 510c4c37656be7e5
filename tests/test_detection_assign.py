"""Target assignment and decoding on hand-made grids."""

import math

import pytest
import torch

from labkit.detection.assign import (
    assign_targets,
    boxes_to_ltrb,
    decode_predictions,
    grid_centers,
    ltrb_to_boxes,
)


def test_grid_centers_are_row_major_cell_middles():
    centers = grid_centers(2, 3, stride=8)
    # Cell (i, j) = index i * 3 + j, centre ((j + 0.5) * 8, (i + 0.5) * 8).
    assert centers.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def test_ltrb_round_trip():
    centers = torch.tensor([[12.0, 20.0]])
    boxes = torch.tensor([[2.0, 5.0, 30.0, 26.0]])
    ltrb = boxes_to_ltrb(centers, boxes)
    assert ltrb.tolist() == [[10.0, 15.0, 18.0, 6.0]]
    assert torch.equal(ltrb_to_boxes(centers, ltrb), boxes)


def test_centre_sampling_and_smallest_box_wins():
    # 64 x 64 image, stride 8 → 8 x 8 grid, cell centres at 4, 12, 20, ..., 60.
    # Big box [8, 40]² (label 1), centre 24, radius 1.5 * 8 = 12: centres strictly within 12 of
    # 24 are 20 and 28 → cells (i, j) in {2, 3}² = indices 18, 19, 26, 27.
    # Small box [24, 40]² (label 0), centre 32: centres 28 and 36 → {3, 4}² = 27, 28, 35, 36.
    # Cell 27 (i = j = 3) is claimed by both and goes to the smaller box (area 256 < 1024).
    boxes = torch.tensor([[8.0, 8.0, 40.0, 40.0], [24.0, 24.0, 40.0, 40.0]])
    labels = torch.tensor([1, 0])
    cls_target, box_target = assign_targets(boxes, labels, (8, 8), stride=8, num_classes=3)
    positives = {i: int(cls_target[i]) for i in range(64) if cls_target[i] != 3}
    assert positives == {18: 1, 19: 1, 26: 1, 27: 0, 28: 0, 35: 0, 36: 0}
    assert box_target[18].tolist() == boxes[0].tolist()
    assert box_target[27].tolist() == boxes[1].tolist()
    assert (box_target[cls_target == 3] == 0).all()


def test_no_objects_means_all_background():
    cls_target, box_target = assign_targets(
        torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), (4, 4), 8, 2
    )
    assert (cls_target == 2).all() and box_target.shape == (16, 4)


def test_bad_labels_fail_loudly():
    with pytest.raises(ValueError, match="labels must be in"):
        assign_targets(torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([3]), (4, 4), 8, 3)


def test_decode_predictions_scores_boxes_and_nms():
    # One confident cell (i=1, j=2) of class 1 on a 4 x 4 grid, stride 8: centre (20, 12).
    # delta = log 3 → 3 strides = 24 px each side → box [-4, -12, 44, 36], clipped to the
    # 32 x 32 image: [0, 0, 32, 32]. Its neighbour (i=1, j=3) predicts the same class with a
    # lower score; its box is shifted by 8 px, IoU well above 0.5 → removed by NMS.
    logits = torch.full((1, 2, 4, 4), -10.0)
    logits[0, 1, 1, 2] = 2.0
    logits[0, 1, 1, 3] = 1.0
    deltas = torch.full((1, 4, 4, 4), math.log(3.0))
    [det] = decode_predictions(logits, deltas, stride=8, score_thresh=0.1, iou_threshold=0.5)
    assert det["labels"].tolist() == [1]
    assert det["scores"].tolist() == pytest.approx([torch.sigmoid(torch.tensor(2.0)).item()])
    assert det["boxes"].tolist() == [[0.0, 0.0, 32.0, 32.0]]
    # With unclipped boxes (a larger image) the raw box shows: cell centre ± 24 px.
    [det] = decode_predictions(logits, deltas, 8, 0.1, 0.5, image_size=(100, 100))
    torch.testing.assert_close(det["boxes"][0], torch.tensor([0.0, 0.0, 44.0, 36.0]))
    # Nothing above the threshold → empty, well-formed output.
    [det] = decode_predictions(logits, deltas, 8, score_thresh=0.99)
    assert det["boxes"].shape == (0, 4) and det["labels"].dtype == torch.int64
