"""NMS against torchvision.ops, a slow obvious reference, and hand-computed cases."""

import pytest
import torch
import torchvision.ops as tv

from labkit.detection import nms as nms_module
from labkit.detection.boxes import box_iou
from labkit.detection.nms import _box_columns, _iou_columns, _threshold_in, batched_nms, nms


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
    # IoU exactly equal to the threshold does not suppress (strictly greater is required):
    # a box and its lower half overlap by 50/100 = 0.5, exact in binary.
    half = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])
    assert nms(half, scores[:2], 0.5).tolist() == [0, 1]
    # But an IoU of 1/3 in float32 is 0.33333334, above the float64 1/3: suppressed, as in
    # torchvision, which compares the float32 IoU with the threshold as a double.
    assert nms(boxes[[0, 2]], scores[[0, 2]], 1 / 3).tolist() == [0]
    assert nms(boxes[[0, 2]].double(), scores[[0, 2]].double(), 1 / 3).tolist() == [0, 1]


def tie_pairs():
    """``(k, boxes)``: two integer boxes, higher-scored first, whose IoU is exactly ``k / 10``.

    Nested: ``[0, 0, 10, 10]`` contains ``[0, 0, 10, k]``: intersection ``10 k``, union 100.
    Side by side: two boxes ``10 + k`` wide, overlapping by ``2 k`` over a width of 20:
    intersection ``2 k h``, union ``20 h``. Each also scaled up and moved, so the float IoU is
    reached through different roundings; integer coordinates keep every step exact except the
    final division, ``fl(k / 10)``, which is where torchvision's comparison in double matters.
    """
    for k in range(1, 10):
        for scale in (1, 3, 40):
            for shift in (0, 1001):
                nested = torch.tensor([[0, 0, 10, 10], [0, 0, 10, k]])
                side_by_side = torch.tensor([[0, 0, 10 + k, 4], [10 - k, 0, 20, 4]])
                for pair in (nested, side_by_side, side_by_side.flip(0), nested[:, [1, 0, 3, 2]]):
                    yield k, pair * scale + shift


THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iou_exactly_on_the_threshold_matches_torchvision(dtype):
    scores = torch.tensor([0.9, 0.8], dtype=dtype)
    ties = 0
    for k, pair in tie_pairs():
        boxes = pair.to(dtype)
        assert box_iou(boxes[:1], boxes[1:]).item() == torch.tensor(k / 10, dtype=dtype).item()
        for threshold in THRESHOLDS + [k / 10]:
            expected = tv.nms(boxes, scores, threshold)
            assert torch.equal(nms(boxes, scores, threshold), expected), (k, pair, threshold)
            ties += threshold == k / 10
    assert ties > 100
    # The case from the issue: IoU 3/10 in float32 is 0.30000001 > 0.3 (as a double): suppressed.
    # In float64, 3/10 is the same double as 0.3: not above it, kept.
    pair = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 3.0]])
    assert nms(pair.to(dtype), scores, 0.3).tolist() == ([0] if dtype == torch.float32 else [0, 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_ties_match_torchvision_on_both_strategies(dtype):
    # Many tie pairs side by side, each pair in one category, categories interleaved so that
    # pairs of different categories overlap too (which batched_nms must ignore). 300 boxes use
    # the coordinate-offset strategy, 2,000 the per-category loop (torchvision's switch: 1,000).
    g = torch.Generator().manual_seed(0)
    pairs = [pair for _, pair in tie_pairs()]
    for n_pairs in (150, 1000):
        chosen = torch.randint(0, len(pairs), (n_pairs,), generator=g)
        boxes = torch.cat([pairs[i] + 3 * (j % 7) for j, i in enumerate(chosen.tolist())])
        boxes = boxes.to(dtype)
        scores = torch.rand(n_pairs, generator=g).repeat_interleave(2)
        scores[1::2] -= 0.001  # the first box of each pair scores higher
        scores = scores.to(dtype)
        idxs = torch.arange(n_pairs).repeat_interleave(2) % 3
        for threshold in THRESHOLDS:
            expected = tv.batched_nms(boxes, scores, idxs, threshold)
            assert torch.equal(batched_nms(boxes, scores, idxs, threshold), expected)
            assert torch.equal(nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_integer_boxes_on_a_small_grid_match_torchvision(dtype):
    # Coordinates 0..12, so many pairs have the same small-integer IoU ratios (1/3, 2/5, 1/2, ...)
    # and many sit exactly on a decimal threshold; widths 0 give degenerate boxes; scores from a
    # few values give ties in score as well.
    thresholds = [0.0, *THRESHOLDS, 0.25, 1 / 3, 2 / 3, 0.75, 1.0]
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        n = [8, 60, 250][seed % 3]
        top_left = torch.randint(0, 9, (n, 2), generator=g)
        size = torch.randint(0, 5, (n, 2), generator=g)
        boxes = torch.cat([top_left, top_left + size], dim=1).to(dtype)
        scores = torch.randint(0, 5 if seed % 2 else 1000, (n,), generator=g).to(dtype)
        idxs = torch.randint(0, 3, (n,), generator=g)
        for threshold in thresholds:
            keep = nms(boxes, scores, threshold)
            assert torch.equal(keep, tv.nms(boxes, scores, threshold)), (seed, threshold)
            batched = batched_nms(boxes, scores, idxs, threshold)
            assert torch.equal(batched, tv.batched_nms(boxes, scores, idxs, threshold))


def test_threshold_in_the_box_dtype_compares_like_a_double():
    # For every float32 x: x > t (as doubles) exactly when x > _threshold_in(float32, t) in float32.
    g = torch.Generator().manual_seed(0)
    thresholds = (
        [k / 10 for k in range(11)] + [1 / 3, 0.5 + 2**-30] + torch.rand(20, generator=g).tolist()
    )
    for t in thresholds:
        near = torch.tensor(t, dtype=torch.float32)
        xs = [near]
        for direction in (-1.0, 1.0):  # the floats just below and above t
            x = near
            for _ in range(3):
                x = torch.nextafter(x, torch.tensor(direction * 2.0))
                xs.append(x)
        xs = torch.stack(xs)
        low = _threshold_in(torch.float32, t)  # 0-dim float32 tensor
        assert low.dtype == torch.float32 and low.item() <= t
        assert torch.equal(xs.double() > t, xs > low), t
    assert _threshold_in(torch.float64, 0.3).item() == 0.3
    assert _threshold_in(torch.float32, 0.3).item() < 0.3 < torch.tensor(0.3).item()


def test_nan_threshold_suppresses_nothing_like_torchvision():
    g = torch.Generator().manual_seed(1)
    boxes, scores = clustered_boxes(50, g), torch.rand(50, generator=g)
    assert torch.equal(nms(boxes, scores, float("nan")), tv.nms(boxes, scores, float("nan")))


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


@pytest.mark.parametrize("n", [50, 1000, 1001, 2000])
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


def test_batched_nms_above_torchvision_switch_is_identical_too():
    # Above 1,000 boxes torchvision loops over categories and re-sorts with an unstable sort; we
    # do the same, so even the order among tied scores is the same.
    g = torch.Generator().manual_seed(7)
    boxes = clustered_boxes(2000, g, integer=True)
    scores = torch.randint(0, 10, (2000,), generator=g).float()
    idxs = torch.randint(0, 3, (2000,), generator=g)
    ours, theirs = batched_nms(boxes, scores, idxs, 0.5), tv.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(ours, theirs)


def test_box_columns_iou_equals_box_iou():
    g = torch.Generator().manual_seed(3)
    a, b = clustered_boxes(40, g), clustered_boxes(30, g)
    assert torch.equal(_iou_columns(_box_columns(a), _box_columns(b)), box_iou(a, b))


@pytest.mark.parametrize("head, solve_directly", [(16, 16), (1, 0), (64, 700)])
def test_head_sizes_give_the_same_answer(monkeypatch, head, solve_directly):
    # The head size and when to stop splitting only change speed, never the result.
    g = torch.Generator().manual_seed(11)
    boxes, scores = clustered_boxes(500, g), torch.rand(500, generator=g)
    expected = tv.nms(boxes, scores, 0.5)
    monkeypatch.setattr(nms_module, "HEAD", head)
    monkeypatch.setattr(nms_module, "SOLVE_DIRECTLY", solve_directly)
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


def test_iou_columns_equal_torchvision_box_iou_bit_for_bit_degenerate_boxes_included():
    # Integer boxes on a small grid: zero-width, zero-height and point boxes, plus two inverted
    # ones. torchvision returns NaN for a pair of zero-area boxes; so does _iou_columns.
    g = torch.Generator().manual_seed(4)
    top_left = torch.randint(0, 6, (60, 2), generator=g)
    boxes = torch.cat([top_left, top_left + torch.randint(0, 3, (60, 2), generator=g)], 1).float()
    boxes = torch.cat([boxes, torch.tensor([[4.0, 4.0, 1.0, 1.0], [2.0, 0.0, 0.0, 3.0]])])
    columns = _box_columns(boxes)
    torch.testing.assert_close(
        _iou_columns(columns, columns), tv.box_iou(boxes, boxes), rtol=0, atol=0, equal_nan=True
    )


def test_kept_indices_are_ordinary_tensors():
    # NMS runs in inference mode for speed; what it returns must still work in autograd, e.g.
    # to pick the kept boxes of a tensor that requires grad.
    g = torch.Generator().manual_seed(2)
    boxes, scores = clustered_boxes(30, g), torch.rand(30, generator=g, requires_grad=True)
    for keep in (nms(boxes, scores, 0.5), batched_nms(boxes, scores, torch.zeros(30).long(), 0.5)):
        assert not keep.is_inference()
        scores[keep].sum().backward()


@pytest.mark.parametrize("n", [100, 1000, 5000])
@pytest.mark.parametrize("num_classes", [1, 5, 20, 80])
def test_batched_nms_matches_torchvision_at_benchmark_sizes_and_class_counts(n, num_classes):
    # The sizes benchmarks/bench_nms.py times (1,000 and 5,000 sit on both sides of
    # torchvision's switch between its two strategies), from one category to many.
    g = torch.Generator().manual_seed(n + num_classes)
    boxes = clustered_boxes(n, g, integer=num_classes == 5)  # integer boxes: many exact ties
    scores = torch.randint(0, 50, (n,), generator=g).float() if num_classes == 20 else None
    scores = torch.rand(n, generator=g) if scores is None else scores
    idxs = torch.randint(0, num_classes, (n,), generator=g)
    for dtype in (torch.float32, torch.float64):
        b, s = boxes.to(dtype), scores.to(dtype)
        assert torch.equal(batched_nms(b, s, idxs, 0.5), tv.batched_nms(b, s, idxs, 0.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_nms_boundary_cases(dtype):
    one = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=dtype)
    score = torch.tensor([0.5], dtype=dtype)
    assert batched_nms(one, score, torch.tensor([3]), 0.5).tolist() == [0]
    # Zero-area boxes (points and lines) in two categories, next to ordinary boxes: never
    # suppressed, and never suppressing.
    boxes = torch.tensor(
        [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 5, 5], [0, 0, 5, 0], [0, 0, 5, 5], [2, 2, 2, 7]],
        dtype=dtype,
    )
    scores = torch.tensor([0.1, 0.4, 0.3, 0.2, 0.3, 0.3], dtype=dtype)  # ties in score too
    idxs = torch.tensor([0, 1, 0, 1, 0, 1])
    for threshold in (0.0, 0.5, 1.0):
        expected = tv.batched_nms(boxes, scores, idxs, threshold)
        assert torch.equal(batched_nms(boxes, scores, idxs, threshold), expected)
    # Boxes exactly on the threshold, one pair per category: IoU 1/2 does not suppress at 0.5.
    half = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5]] * 2, dtype=dtype)
    s = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=dtype)
    cats = torch.tensor([0, 0, 1, 1])
    assert batched_nms(half, s, cats, 0.5).tolist() == [0, 1, 2, 3]
    assert torch.equal(batched_nms(half, s, cats, 0.4), tv.batched_nms(half, s, cats, 0.4))
