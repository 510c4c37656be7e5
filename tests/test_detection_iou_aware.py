"""IoU-aware classification losses (quality focal, varifocal): hand-computed values, boundary
cases, torchvision's focal loss where they coincide with it, and their use in detection_loss."""

import math

import pytest
import torch
import torchvision.ops as tv

from labkit.detection.losses import (
    detection_loss,
    quality_focal_loss,
    sigmoid_focal_loss,
    varifocal_loss,
)

LOG2 = math.log(2)


def test_quality_focal_loss_hand_computed():
    # Logit 0 → σ = 0.5. Target 1: CE = log 2, |1 - 0.5|² = 0.25 → 0.25 log 2; target 0 alike.
    loss = quality_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(loss, torch.full((2,), 0.25 * LOG2))
    # Target 0.8 with σ = 0.5: CE = -(0.8 log 0.5 + 0.2 log 0.5) = log 2, |0.8 - 0.5|² = 0.09.
    loss = quality_focal_loss(torch.zeros(1), torch.tensor([0.8]))
    assert loss.item() == pytest.approx(0.09 * LOG2)
    # β = 0: plain binary cross-entropy with the soft target.
    loss = quality_focal_loss(torch.zeros(1), torch.tensor([0.8]), beta=0.0)
    assert loss.item() == pytest.approx(LOG2)


def test_quality_focal_loss_vanishes_where_the_score_equals_its_target():
    # A tie σ = y costs nothing: the score already is the box's IoU.
    logits = torch.tensor([-2.0, 0.0, 1.5], dtype=torch.float64)
    loss = quality_focal_loss(logits, torch.sigmoid(logits))
    torch.testing.assert_close(loss, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_quality_focal_loss_on_binary_targets_is_torchvision_focal_without_alpha(reduction, beta):
    # y ∈ {0, 1}: |y - σ| = 1 - p_t, so QFL = FL with γ = β and α switched off (-1).
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(7, 3, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(7, 3, generator=g) > 0.6).double()
    expected = tv.sigmoid_focal_loss(logits, targets, alpha=-1, gamma=beta, reduction=reduction)
    got = quality_focal_loss(logits, targets, beta, reduction)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_varifocal_loss_hand_computed():
    # Logit 0 → p = 0.5. Negative (q = 0): α p² (-log(1 - p)) = 0.75 * 0.25 * log 2.
    # Positive q = 1: q * CE = log 2. Positive q = 0.5: 0.5 * log 2 (CE with q = 0.5 is log 2).
    loss = varifocal_loss(torch.zeros(3), torch.tensor([0.0, 1.0, 0.5]))
    expected = torch.tensor([0.75 * 0.25 * LOG2, LOG2, 0.5 * LOG2])
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("alpha, gamma", [(0.75, 2.0), (0.5, 0.0)])
def test_varifocal_negatives_are_torchvision_focal_negatives(alpha, gamma):
    # On negatives VFL = α p^γ (-log(1 - p)), torchvision's focal term with its α = 1 - α_VFL.
    logits = torch.linspace(-6, 4, 11, dtype=torch.float64)
    zeros = torch.zeros_like(logits)
    expected = tv.sigmoid_focal_loss(logits, zeros, alpha=1 - alpha, gamma=gamma)
    torch.testing.assert_close(varifocal_loss(logits, zeros, alpha, gamma), expected, rtol=0, atol=1e-9)  # fmt: skip


@pytest.mark.parametrize("loss_fn", [quality_focal_loss, varifocal_loss])
def test_iou_aware_losses_boundaries(loss_fn):
    # Empty input: 0 for the mean (not NaN), an empty tensor for "none".
    empty = torch.zeros(0)
    assert loss_fn(empty, empty, reduction="mean").item() == 0.0
    assert loss_fn(empty, empty).shape == (0,)
    # float32 and float64 agree.
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(50, generator=g, dtype=torch.float64) * 4
    targets = torch.rand(50, generator=g, dtype=torch.float64) * (torch.rand(50, generator=g) > 0.5)
    torch.testing.assert_close(
        loss_fn(logits.float(), targets.float()).double(), loss_fn(logits, targets), rtol=1e-5, atol=1e-6  # fmt: skip
    )
    # Finite gradients, checked against finite differences.
    x = logits[:8].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, targets[:8], reduction="sum"), (x,))
    # Targets outside [0, 1] and mismatched shapes fail loudly.
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        loss_fn(torch.zeros(2), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="reduction"):
        loss_fn(torch.zeros(2), torch.zeros(2), reduction="avg")


def _one_cell_case(box_delta: float):
    """A 4x4 grid at stride 8 with one GT box [4, 4, 20, 20] centred on cell (1, 1): the only
    positive. Box deltas 0 decode to a box one stride around each centre, i.e. exactly the GT
    (IoU 1); very negative deltas to a near-point box (IoU ≈ 0)."""
    torch.manual_seed(0)
    outputs = {
        "cls_logits": torch.randn(1, 3, 4, 4),
        "box_deltas": torch.full((1, 4, 4, 4), box_delta),
    }
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([1])}]
    logits = outputs["cls_logits"].flatten(2).transpose(1, 2)[0]  # [16, 3]
    one_hot = torch.zeros(16, 3)
    one_hot[1 * 4 + 1, 1] = 1.0
    return outputs, targets, logits, one_hot


@pytest.mark.parametrize(
    "cls_loss, reference",
    [
        ("quality_focal", lambda x, t: quality_focal_loss(x, t, 2.0, "sum")),
        ("varifocal", lambda x, t: varifocal_loss(x, t, 0.25, 2.0, "sum")),
    ],
)
def test_detection_loss_iou_targets_at_iou_one_and_zero(cls_loss, reference):
    # IoU 1: the soft target is the one-hot itself (one positive, so the sum is not rescaled).
    outputs, targets, logits, one_hot = _one_cell_case(0.0)
    _, parts = detection_loss(outputs, targets, stride=8, cls_loss=cls_loss)
    assert parts["num_positives"] == 1
    assert parts["loss/cls"] == pytest.approx(reference(logits, one_hot).item(), rel=1e-5)
    # IoU ≈ 0: the positive's target is ≈ 0, as if it were background.
    outputs, targets, logits, one_hot = _one_cell_case(-20.0)
    _, parts = detection_loss(outputs, targets, stride=8, cls_loss=cls_loss)
    assert parts["loss/cls"] == pytest.approx(reference(logits, 0 * one_hot).item(), rel=1e-5)


@pytest.mark.parametrize("cls_loss", ["focal", "quality_focal", "varifocal"])
def test_detection_loss_cls_kinds_on_empty_images_and_gradients(cls_loss):
    torch.manual_seed(0)
    outputs = {
        "cls_logits": torch.randn(2, 3, 4, 4, requires_grad=True),
        "box_deltas": torch.zeros(2, 4, 4, 4, requires_grad=True),
    }
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    one = {"boxes": torch.tensor([[4.0, 4.0, 28.0, 28.0]]), "labels": torch.tensor([2])}
    loss, parts = detection_loss(outputs, [one, empty], stride=8, cls_loss=cls_loss)
    loss.backward()
    assert torch.isfinite(outputs["cls_logits"].grad).all()
    assert torch.isfinite(outputs["box_deltas"].grad).all()
    loss, parts = detection_loss(outputs, [empty, empty], stride=8, cls_loss=cls_loss)
    assert parts["loss/box"] == 0.0 and math.isfinite(loss.item())
    with pytest.raises(ValueError, match="cls_loss"):
        detection_loss(outputs, [one, empty], stride=8, cls_loss="softmax")


def test_binary_focal_path_unchanged():
    # cls_loss="focal" is the RetinaNet loss on one-hot targets (today's recipe).
    outputs, targets, logits, one_hot = _one_cell_case(0.0)
    _, parts = detection_loss(outputs, targets, stride=8, cls_loss="focal")
    expected = sigmoid_focal_loss(logits, one_hot, 0.25, 2.0, reduction="sum").item()
    assert parts["loss/cls"] == pytest.approx(expected, rel=1e-5)
