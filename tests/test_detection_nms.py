"""NMS against torchvision.ops, a slow obvious reference, and hand-computed cases."""

import pytest
import torch
import torchvision.ops as tv

from labkit.detection import nms as nms_module
from labkit.detection.boxes import box_iou
from labkit.detection.nms import _box_columns, _iou_columns, batched_nms, nms


def clustered_boxes(n, generator, num_clusters=20, size=200.0, integer=False):
    """Boxes jittered around a few objects, as a detector produces them, so NMS has work to do."""
    centers = torch.rand(num_clusters, 2, generator=generator) * size
    sizes = torch.rand(num_clusters, 2, generator=generator) * 40 + 5
    which = torch.randint(0, num_clusters, (n,), generator=generator)
    c = centers[which] + torch.randn(n, 2, generator=generator) * 4
    wh = sizes[which] * (1 + 0.2 * torch.randn(n, 2, generator=generator)).clamp(min=0.1)
    boxes = torch.cat([c - wh / 2, c + wh / 2], dim=1)
    return boxes.round() if integer else boxes


def reference_nms(boxes, scores, iou_threshold):
    """The textbook loop: visit boxes by score, keep one unless a kept box overlaps it."""
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    iou = box_iou(boxes, boxes)
    keep = []
    for i in order:
        if all(iou[k, i] <= iou_threshold for k in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.int64)


@pytest.mark.parametrize("n", [1, 7, 300, 700, 1500])
def test_nms_matches_torchvision_and_reference(n):
    g = torch.Generator().manual_seed(n)
    for trial in range(3):
        boxes = clustered_boxes(n, g, integer=trial == 1)
        scores = torch.rand(n, generator=g)
        threshold = [0.3, 0.5, 0.7][trial]
        keep = nms(boxes, scores, threshold)
        assert keep.dtype == torch.int64
        assert torch.equal(keep, tv.nms(boxes, scores, threshold))
        if n <= 300:
            assert torch.equal(keep, reference_nms(boxes, scores, threshold))


def test_ties_in_score_are_broken_by_input_order_like_torchvision():
    # torchvision's CPU kernel sorts scores stably, so among equal scores the earlier box wins;
    # our stable sort does the same. Few distinct scores → many ties.
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        boxes = clustered_boxes(400, g, integer=True)
        scores = torch.randint(0, 4, (400,), generator=g).float()
        assert torch.equal(nms(boxes, scores, 0.5), tv.nms(boxes, scores, 0.5))
    # Two identical boxes with the same score: the first one is kept.
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2)
    assert nms(same, torch.tensor([0.5, 0.5]), 0.5).tolist() == [0]


def test_hand_computed_cases():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: best score
            [1.0, 0.0, 11.0, 10.0],  # 1: IoU with 0 = 90/110 ≈ 0.82 → suppressed by 0
            [5.0, 0.0, 15.0, 10.0],  # 2: IoU with 0 = 50/150 = 1/3 → kept at threshold 0.5
            [20.0, 20.0, 30.0, 30.0],  # 3: far from all → kept
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    # At threshold 0.3, box 2 (IoU 1/3 > 0.3 with box 0) goes too.
    assert nms(boxes, scores, 0.3).tolist() == [0, 3]
    # IoU exactly equal to the threshold does not suppress (strictly greater is required).
    assert nms(boxes[[0, 2]], scores[[0, 2]], 1 / 3).tolist() == [0, 1]


def test_chain_needs_the_greedy_order():
    # Boxes 10 wide, each shifted 3 px from the previous one: neighbours have IoU 7/13 ≈ 0.54 > 0.5,
    # boxes two apart 4/16 = 0.25. Greedy keeps 0, which suppresses 1; 2 only overlaps 0 by 0.25,
    # so it is kept and suppresses 3, and so on: the even boxes. A one-shot rule "suppressed by any
    # higher-scored box" would keep box 0 alone. The chain spans several blocks and is the worst
    # case for the fixed-point sweeps.
    n = 600
    x = torch.arange(n, dtype=torch.float32) * 3
    boxes = torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], dim=1)
    scores = torch.linspace(1, 0, n)
    keep = nms(boxes, scores, 0.5)
    assert torch.equal(keep, tv.nms(boxes, scores, 0.5))
    assert torch.equal(keep, torch.arange(0, n, 2))


def test_degenerate_and_empty_inputs():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    assert batched_nms(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5
    ).shape == (0,)
    # Zero-area boxes have IoU 0 with everything (torchvision: NaN, which is not > threshold):
    # none is suppressed.
    points = torch.tensor([[1.0, 1.0, 1.0, 1.0]] * 3 + [[0.0, 0.0, 5.0, 5.0]])
    scores = torch.tensor([0.1, 0.4, 0.3, 0.2])
    assert torch.equal(nms(points, scores, 0.5), tv.nms(points, scores, 0.5))
    assert nms(points, scores, 0.5).tolist() == [1, 2, 3, 0]


def test_float64_boxes():
    g = torch.Generator().manual_seed(5)
    boxes, scores = clustered_boxes(300, g).double(), torch.rand(300, generator=g).double()
    assert torch.equal(nms(boxes, scores, 0.5), tv.nms(boxes, scores, 0.5))


@pytest.mark.parametrize("n", [50, 1000])
def test_batched_nms_matches_torchvision(n):
    g = torch.Generator().manual_seed(n)
    boxes = clustered_boxes(n, g)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 4, (n,), generator=g)
    keep = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(keep, tv.batched_nms(boxes, scores, idxs, 0.5))
    # Per category it is plain NMS: the same boxes as looping over categories.
    per_class = torch.cat(
        [torch.where(idxs == c)[0][nms(boxes[idxs == c], scores[idxs == c], 0.5)] for c in range(4)]
    )
    assert set(keep.tolist()) == set(per_class.tolist())


def test_batched_nms_above_torchvision_switch_keeps_the_same_boxes():
    # Above 1,000 boxes torchvision loops over categories and re-sorts with an unstable sort: same
    # kept boxes, same scores in the same order; only the order among tied scores may differ.
    g = torch.Generator().manual_seed(7)
    boxes = clustered_boxes(2000, g)
    scores, idxs = torch.rand(2000, generator=g), torch.randint(0, 3, (2000,), generator=g)
    ours, theirs = batched_nms(boxes, scores, idxs, 0.5), tv.batched_nms(boxes, scores, idxs, 0.5)
    assert set(ours.tolist()) == set(theirs.tolist())
    assert torch.equal(scores[ours], scores[theirs])


def test_box_columns_iou_equals_box_iou():
    g = torch.Generator().manual_seed(3)
    a, b = clustered_boxes(40, g), clustered_boxes(30, g)
    assert torch.equal(_iou_columns(_box_columns(a), _box_columns(b)), box_iou(a, b))


def test_small_blocks_give_the_same_answer(monkeypatch):
    # The block sizes only change speed, never the result.
    g = torch.Generator().manual_seed(11)
    boxes, scores = clustered_boxes(500, g), torch.rand(500, generator=g)
    expected = tv.nms(boxes, scores, 0.5)
    monkeypatch.setattr(nms_module, "FIRST_BLOCK", 16)
    monkeypatch.setattr(nms_module, "MAX_BLOCK", 64)
    assert torch.equal(nms(boxes, scores, 0.5), expected)


def test_bad_inputs_fail_loudly():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="one score per box"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="floating point"):
        nms(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="one category per box"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2), 0.5)
