"""Losses against torchvision.ops, hand-computed values, gradients, and the detector's loss."""

import math

import pytest
import torch
import torchvision.ops as tv

from labkit.detection.losses import (
    box_regression_loss,
    classification_loss,
    detection_loss,
    diou_loss,
    giou_loss,
    sigmoid_focal_loss,
)


def box_pairs(dtype=torch.float64):
    """Random pairs plus identical, touching, nested, disjoint and zero-area pairs."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g, dtype=dtype) * 50
    pred = torch.cat([xy, xy + 1 + torch.rand(40, 2, generator=g, dtype=dtype) * 20], dim=1)
    xy = torch.rand(40, 2, generator=g, dtype=dtype) * 50
    target = torch.cat([xy, xy + 1 + torch.rand(40, 2, generator=g, dtype=dtype) * 20], dim=1)
    special_pred = torch.tensor(
        [
            [0, 0, 10, 10],
            [0, 0, 10, 10],
            [0, 0, 10, 10],
            [0, 0, 10, 10],
            [5, 5, 5, 9],
            [3, 3, 3, 3],
        ],
        dtype=dtype,
    )
    special_target = torch.tensor(
        [
            [0, 0, 10, 10],
            [10, 0, 20, 10],
            [2, 2, 8, 8],
            [30, 30, 40, 40],
            [5, 5, 5, 9],
            [3, 3, 3, 3],
        ],
        dtype=dtype,
    )  # identical, touching, nested, far apart, identical zero-width, identical points
    return torch.cat([pred, special_pred]), torch.cat([target, special_target])


BOX_LOSSES = [(giou_loss, tv.generalized_box_iou_loss), (diou_loss, tv.distance_box_iou_loss)]


@pytest.mark.parametrize("ours, theirs", BOX_LOSSES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_box_losses_match_torchvision(ours, theirs, reduction):
    pred, target = box_pairs()
    expected = theirs(pred, target, reduction=reduction)
    torch.testing.assert_close(ours(pred, target, reduction=reduction), expected, rtol=0, atol=1e-6)
    # float32 too (the dtype training uses)
    expected32 = theirs(pred.float(), target.float(), reduction=reduction)
    torch.testing.assert_close(
        ours(pred.float(), target.float(), reduction=reduction), expected32, rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("ours, theirs", BOX_LOSSES)
def test_box_losses_on_empty_input_match_torchvision(ours, theirs):
    empty = torch.zeros(0, 4, requires_grad=True)
    for reduction in ("mean", "sum"):
        got = ours(empty, empty, reduction=reduction)
        assert got.item() == theirs(empty, empty, reduction=reduction).item() == 0.0
        got.backward()  # an image with no objects must not break the backward pass
    assert ours(empty, empty, reduction="none").shape == (0,)


def test_box_losses_hand_computed():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # Identical boxes: IoU 1, no penalty → loss 0 for both.
    assert giou_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert diou_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    # Touching side by side: IoU 0 and the enclosing box equals the union → GIoU 0, loss 1.
    # DIoU: centres 10 apart (ρ² = 100), enclosing box 20 x 10 (c² = 500) → 1 - 0 + 0.2.
    b = torch.tensor([[10.0, 0.0, 20.0, 10.0]])
    assert giou_loss(a, b).item() == pytest.approx(1.0, abs=1e-6)
    assert diou_loss(a, b).item() == pytest.approx(1.2, abs=1e-6)
    # L1 + GIoU: every coordinate of b is 10 px off on x → L1 = 10 + 10 = 20 px = 2 strides of 10.
    assert box_regression_loss(a, b, "giou", l1_weight=1.0, l1_scale=10.0).item() == pytest.approx(
        3.0, abs=1e-6
    )
    assert box_regression_loss(a, b, "diou", l1_weight=0.0).item() == pytest.approx(1.2, abs=1e-6)


@pytest.mark.parametrize("loss_fn", [giou_loss, diou_loss])
def test_box_loss_gradients(loss_fn):
    # Overlapping and disjoint pairs, away from the kinks of min/max (gradcheck needs smoothness).
    pred = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 6.0]], dtype=torch.float64, requires_grad=True
    )
    target = torch.tensor([[2.0, 3.0, 13.0, 11.0], [7.0, 8.0, 12.0, 15.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: loss_fn(p, target, reduction="sum"), (pred,))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.5, 0.0), (-1, 1.5)])
def test_focal_loss_matches_torchvision(reduction, alpha, gamma):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(6, 5, generator=g) > 0.7).double()
    got = sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    expected = tv.sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_focal_loss_hand_computed():
    # Logit 0 → p = 0.5 for a positive: CE = log 2, (1 - p_t)^2 = 0.25, α_t = 0.25
    # → 0.25 * 0.25 * log 2.
    loss = sigmoid_focal_loss(torch.zeros(1), torch.ones(1))
    assert loss.item() == pytest.approx(0.0625 * math.log(2))
    # An easy negative (logit -5, p ≈ 0.0067) costs (1-α) p² (-log(1-p)) ≈ 2.3e-7: almost nothing,
    # which is the point of the focal term.
    assert sigmoid_focal_loss(torch.tensor([-5.0]), torch.zeros(1)).item() < 1e-6


def test_classification_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, -100])
    # Only row 0 counts: -log softmax = log(1 + e^-2).
    assert classification_loss(logits, labels).item() == pytest.approx(math.log(1 + math.exp(-2)))
    with pytest.raises(ValueError, match="int64"):
        classification_loss(logits, labels.float())


def test_bad_arguments_fail_loudly():
    boxes = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="reduction"):
        giou_loss(boxes, boxes, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(torch.zeros(2), torch.zeros(2), reduction="avg")
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        diou_loss(boxes, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="same shape"):
        sigmoid_focal_loss(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="kind"):
        box_regression_loss(boxes, boxes, kind="ciou")


def test_detection_loss_parts_and_empty_images():
    torch.manual_seed(0)
    outputs = {
        "cls_logits": torch.randn(2, 3, 4, 4, requires_grad=True),
        "box_deltas": torch.zeros(2, 4, 4, 4, requires_grad=True),
    }
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 28.0, 28.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # no objects
    ]
    loss, parts = detection_loss(outputs, targets, stride=8)
    assert set(parts) == {"loss/cls", "loss/box", "num_positives"}
    assert parts["num_positives"] > 0
    assert loss.item() == pytest.approx(parts["loss/cls"] + parts["loss/box"], rel=1e-5)
    loss.backward()
    assert torch.isfinite(outputs["box_deltas"].grad).all()
    # Only background anywhere: the box loss is 0 and nothing is NaN.
    loss, parts = detection_loss(outputs, [targets[1], targets[1]], stride=8)
    assert parts["loss/box"] == 0.0 and math.isfinite(loss.item())
