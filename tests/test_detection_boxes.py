"""Box geometry against torchvision.ops and against hand-computed cases."""

import pytest
import torch
import torchvision.ops as tv

from labkit.detection.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    distance_box_iou,
    generalized_box_iou,
    paired_box_iou,
)


def random_boxes(n, generator, dtype=torch.float64, size=100.0):
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * size
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * size / 3
    return torch.cat([xy, xy + wh], dim=1)


def tricky_boxes(dtype=torch.float64):
    """Identical, touching, nested, disjoint and zero-area boxes, all in one set."""
    return torch.tensor(
        [
            [0, 0, 10, 10],
            [0, 0, 10, 10],  # identical to the first
            [10, 0, 20, 10],  # touches the first along x = 10
            [0, 10, 10, 20],  # touches the first along y = 10
            [0, 0, 5, 5],  # nested in the first, a quarter of its area
            [2, 2, 8, 8],  # nested, centred
            [50, 50, 60, 70],  # far away
            [5, 5, 5, 9],  # zero width, inside the first
            [30, 30, 30, 30],  # a point
        ],
        dtype=dtype,
    )


PAIRWISE = [
    (box_iou, tv.box_iou),
    (generalized_box_iou, tv.generalized_box_iou),
    (distance_box_iou, tv.distance_box_iou),
]


@pytest.mark.parametrize("ours, theirs", PAIRWISE)
def test_pairwise_matches_torchvision_on_random_and_tricky_boxes(ours, theirs):
    g = torch.Generator().manual_seed(0)
    a = torch.cat([random_boxes(30, g), tricky_boxes()])
    b = torch.cat([tricky_boxes(), random_boxes(20, g)])
    expected = theirs(a, b)
    got = ours(a, b)
    assert got.shape == (a.shape[0], b.shape[0])
    # torchvision divides 0 by 0 for two degenerate boxes (NaN); we define that as 0.
    finite = torch.isfinite(expected)
    torch.testing.assert_close(got[finite], expected[finite], rtol=0, atol=1e-6)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("ours, theirs", PAIRWISE)
def test_pairwise_float32_is_bitwise_equal_to_torchvision(ours, theirs):
    # Same operations in the same order: identical float32 results, not just close ones.
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(50, g, torch.float32), random_boxes(40, g, torch.float32)
    assert torch.equal(ours(a, b), theirs(a, b))


@pytest.mark.parametrize("ours, theirs", PAIRWISE)
def test_empty_inputs_give_empty_matrices(ours, theirs):
    boxes = tricky_boxes(torch.float32)
    empty = torch.zeros(0, 4)
    assert ours(empty, boxes).shape == (0, len(boxes)) == theirs(empty, boxes).shape
    assert ours(boxes, empty).shape == (len(boxes), 0)
    assert ours(empty, empty).shape == (0, 0)


def test_hand_computed_cases():
    unit = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # Side by side, touching along x = 10: no intersection, and the enclosing box is exactly the
    # union, so GIoU has no penalty: IoU 0, GIoU 0.
    beside = torch.tensor([[10.0, 0.0, 20.0, 10.0]])
    assert box_iou(unit, beside).item() == 0.0
    assert generalized_box_iou(unit, beside).item() == 0.0
    # Nested box of a quarter of the area: intersection 25, union 100 → IoU 0.25; the enclosing
    # box is the outer box (area 100 = union) → GIoU = IoU.
    quarter = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    assert box_iou(unit, quarter).item() == 0.25
    assert generalized_box_iou(unit, quarter).item() == 0.25
    # Half overlap: [0,10] and [5,15] in x → intersection 50, union 150 → IoU 1/3.
    shifted = torch.tensor([[5.0, 0.0, 15.0, 10.0]])
    assert box_iou(unit, shifted).item() == pytest.approx(1 / 3)
    # DIoU of the same pair: centres 5 apart (ρ² = 25), enclosing box 15 x 10 (c² = 325)
    # → 1/3 - 25/325.
    assert distance_box_iou(unit, shifted).item() == pytest.approx(1 / 3 - 25 / 325)
    # Disjoint with a gap: [0,10] and [20,30] in x; enclosing area 300, union 200
    # → GIoU = 0 - 100/300 = -1/3.
    far = torch.tensor([[20.0, 0.0, 30.0, 10.0]])
    assert generalized_box_iou(unit, far).item() == pytest.approx(-1 / 3)
    # Two identical points: empty union, defined as IoU 0 (torchvision gives NaN).
    point = torch.tensor([[3.0, 3.0, 3.0, 3.0]])
    assert box_iou(point, point).item() == 0.0
    assert generalized_box_iou(point, point).item() == 0.0


def test_integer_and_half_boxes_are_upcast_without_overflow():
    # In int16, 300 * 300 = 90000 would overflow; the area must come out right.
    big = torch.tensor([[0, 0, 300, 300]], dtype=torch.int16)
    assert box_area(big).item() == 90000
    assert box_iou(big, big).dtype == torch.float32
    assert box_iou(big, big).item() == 1.0
    half = torch.tensor([[0, 0, 300, 300]], dtype=torch.float16)  # 90000 > float16 max 65504
    assert box_iou(half, half).item() == 1.0


def test_format_round_trip():
    g = torch.Generator().manual_seed(2)
    boxes = random_boxes(10, g)
    cxcywh = box_xyxy_to_cxcywh(boxes)
    torch.testing.assert_close(cxcywh, tv.box_convert(boxes, "xyxy", "cxcywh"))
    torch.testing.assert_close(box_cxcywh_to_xyxy(cxcywh), boxes)


def test_paired_iou_is_the_diagonal_of_the_pairwise_matrix():
    g = torch.Generator().manual_seed(3)
    a, b = random_boxes(12, g), random_boxes(12, g)
    iou, _ = paired_box_iou(a, b, eps=0.0)
    torch.testing.assert_close(iou, box_iou(a, b).diagonal())


def test_bad_shapes_fail_loudly():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        box_iou(torch.zeros(4), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="same shape"):
        paired_box_iou(torch.zeros(2, 4), torch.zeros(3, 4))
