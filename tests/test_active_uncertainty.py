"""P40 scores: entropy, margin, least confidence on hand-made distributions; aggregation."""

import math

import pytest
import torch

from labkit.active.uncertainty import (
    aggregate,
    binary,
    class_distribution,
    detection_uncertainty,
    entropy,
    image_uncertainties,
    image_uncertainty,
    least_confidence,
    margin,
)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_uniform_is_most_uncertain_one_hot_is_certain(k):
    uniform = torch.full((k,), 1 / k)
    one_hot = torch.zeros(k)
    one_hot[1] = 1.0
    # Uniform: entropy log K (the maximum), the top two tie (margin 1), top prob 1/K.
    assert entropy(uniform).item() == pytest.approx(math.log(k))
    assert margin(uniform).item() == pytest.approx(1.0)
    assert least_confidence(uniform).item() == pytest.approx(1 - 1 / k)
    # One-hot: nothing to doubt; 0 log 0 must be 0, not nan.
    for score in (entropy, margin, least_confidence):
        assert score(one_hot).item() == 0.0


def test_entropy_matches_torch_distributions():
    probs = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    expected = torch.distributions.Categorical(probs=probs).entropy()
    torch.testing.assert_close(entropy(probs), expected)


def test_hand_computed_values():
    q = torch.tensor([0.7, 0.2, 0.1])
    assert margin(q).item() == pytest.approx(1 - (0.7 - 0.2))
    assert least_confidence(q).item() == pytest.approx(0.3)
    assert entropy(q).item() == pytest.approx(
        -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    )


def test_float32_and_float64_agree_and_keep_their_dtype():
    p64 = torch.tensor([0.0, 1e-7, 0.05, 0.5, 0.93, 1.0], dtype=torch.float64)
    for kind in ("entropy", "margin", "least_confidence"):
        u64 = detection_uncertainty(p64, kind)
        u32 = detection_uncertainty(p64.float(), kind)
        assert u64.dtype == torch.float64 and u32.dtype == torch.float32
        assert torch.isfinite(u32).all()
        torch.testing.assert_close(u32.double(), u64, atol=1e-6, rtol=1e-5)


def test_binary_detection_scores_peak_at_one_half():
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    assert binary(p).sum(-1).eq(1).all()
    for kind in ("entropy", "margin", "least_confidence"):
        u = detection_uncertainty(p, kind)
        assert u.argmax() == 2 and u[0] == 0 and u[-1] == 0
        torch.testing.assert_close(u[1], u[3])  # symmetric in p <-> 1 - p
    with pytest.raises(ValueError, match="unknown uncertainty"):
        detection_uncertainty(p, "variance")


def test_class_distribution_adds_background_and_sums_to_one():
    q = class_distribution(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.1, 0.0]]))
    torch.testing.assert_close(q.sum(-1), torch.ones(2))
    assert q[0].tolist() == [0.0, 0.0, 0.0, 1.0]  # nothing fires: surely background
    # background = (1 - 0.9)(1 - 0.1)(1 - 0) = 0.09; then divide by 0.9 + 0.1 + 0 + 0.09
    torch.testing.assert_close(q[1], torch.tensor([0.9, 0.1, 0.0, 0.09]) / 1.09)


def test_aggregation_on_hand_made_detections():
    scores = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
    u = detection_uncertainty(scores, "entropy")  # [log 2, H(0.9), H(0.99)]
    assert image_uncertainty(scores, how="max") == pytest.approx(math.log(2))
    assert image_uncertainty(scores, how="mean") == pytest.approx(float(u.mean()))
    assert image_uncertainty(scores, how="sum") == pytest.approx(float(u.sum()))
    # sum favours crowded images: three copies of a detection count three times
    crowded = scores.repeat(3)
    assert image_uncertainty(crowded, how="sum") == pytest.approx(3 * float(u.sum()))
    assert image_uncertainty(crowded, how="max") == image_uncertainty(scores, how="max")
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(u, "median")


def test_images_without_detections():
    none = torch.zeros(0)
    # No p_max: the fixed prior (default 0: empty frames rank last).
    for how in ("max", "mean", "sum"):
        assert image_uncertainty(none, how=how) == 0.0
        assert image_uncertainty(none, how=how, empty_score=0.3) == 0.3
    # With p_max: scored as one detection of that probability.
    assert image_uncertainty(none, p_max=0.5) == pytest.approx(math.log(2))
    assert image_uncertainty(none, p_max=0.01) < image_uncertainty(none, p_max=0.04)
    preds = [{"scores": torch.tensor([0.5])}, {"scores": torch.zeros(0)}]
    scores = image_uncertainties(preds, torch.tensor([0.5, 0.02]))
    assert scores.dtype == torch.float64 and scores.shape == (2,)
    assert scores[0] == pytest.approx(math.log(2)) and 0 < scores[1] < scores[0]
