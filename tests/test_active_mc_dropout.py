"""P40 MC dropout: the wrapper samples only when asked; passes' boxes are matched by IoU."""

import math

import pytest
import torch

from labkit.active.inference import infer_pool, mc_passes
from labkit.active.mc_dropout import (
    MCDropoutDetector,
    cluster_disagreement,
    image_disagreement,
    match_passes,
)
from labkit.active.pool import SkewedShapesPool, materialise
from labkit.detection.model import TinyDetector


@pytest.fixture(scope="module")
def wrapped():
    torch.manual_seed(0)
    detector = TinyDetector(3, head_channels=16, freeze_backbone=False)
    torch.nn.init.normal_(detector.cls_head.weight, std=0.5)  # untrained heads are near-constant
    return MCDropoutDetector(detector, p=0.3)


def test_passes_differ_in_train_mode_and_agree_in_eval_mode(wrapped):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    wrapped.train()
    with torch.no_grad():
        a, b = wrapped(images)["cls_logits"], wrapped(images)["cls_logits"]
    assert not torch.equal(a, b)
    wrapped.eval()
    with torch.no_grad():
        c, d = wrapped(images)["cls_logits"], wrapped(images)["cls_logits"]
        plain = wrapped.detector(images)["cls_logits"]
    assert torch.equal(c, d) and torch.equal(c, plain)  # eval: the detector itself
    # MC sampling: dropout on in eval mode, normalisation layers still in eval mode.
    wrapped.sample = True
    with torch.no_grad():
        e, f = wrapped(images)["cls_logits"], wrapped(images)["cls_logits"]
    wrapped.sample = False
    assert not torch.equal(e, f) and not wrapped.detector.training
    assert not wrapped.detector.tower._forward_hooks  # the hook lives for one call only


def test_zero_dropout_is_the_detector(wrapped):
    images = torch.rand(1, 3, 32, 32)
    zero = MCDropoutDetector(wrapped.detector, p=0.0, sample=True).train()
    wrapped.detector.eval()
    with torch.no_grad():
        assert torch.equal(zero(images)["cls_logits"], wrapped.detector(images)["cls_logits"])
    with pytest.raises(ValueError, match="dropout probability"):
        MCDropoutDetector(wrapped.detector, p=1.0)


def test_mc_passes_are_seeded_and_leave_the_global_rng_alone(wrapped):
    pool = materialise(SkewedShapesPool(6, image_size=32, burst=1, seed=2))
    ids, cpu = list(range(6)), torch.device("cpu")
    state = torch.get_rng_state()
    runs = mc_passes(wrapped, pool, ids, cpu, passes=3, seed=5, score_thresh=0.0, batch_size=3)
    assert torch.equal(torch.get_rng_state(), state)
    again = mc_passes(wrapped, pool, ids, cpu, passes=3, seed=5, score_thresh=0.0, batch_size=3)
    assert all(torch.equal(a.p_max, b.p_max) for a, b in zip(runs, again, strict=True))
    assert not torch.equal(runs[0].p_max, runs[1].p_max)  # passes differ from one another
    plain = infer_pool(wrapped, pool, ids, cpu, batch_size=3)
    assert torch.equal(plain.p_max, infer_pool(wrapped, pool, ids, cpu, batch_size=6).p_max)
    with pytest.raises(ValueError, match="MCDropoutDetector"):
        mc_passes(wrapped.detector, pool, ids, cpu, passes=2)


def det(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_boxes_are_matched_across_passes_by_iou_and_class():
    a = [10.0, 10.0, 30.0, 30.0]
    a_shifted = [12.0, 10.0, 32.0, 30.0]  # IoU with a: 360 / 440 = 0.818
    b = [40.0, 40.0, 50.0, 50.0]
    passes = [
        det([a, b], [0.9, 0.3], [0, 1]),
        det([a_shifted], [0.7], [0]),
        det([a, a], [0.6, 0.4], [1, 0]),  # same place, class 1 (not matched to a) and class 0
    ]
    clusters = match_passes(passes, iou_threshold=0.5)
    first = clusters[0]  # started by the best detection, pass 0's a
    assert first["label"] == 0
    torch.testing.assert_close(first["scores"], torch.tensor([0.9, 0.7, 0.4], dtype=torch.float64))
    torch.testing.assert_close(
        first["ious"], torch.tensor([1.0, 360 / 440, 1.0], dtype=torch.float64)
    )
    # pass 2's class-1 box at a, and b of pass 0: objects of their own, missed by other passes
    others = sorted((c["label"], c["scores"].tolist()) for c in clusters[1:])
    assert others == [(1, [0.0, 0.0, pytest.approx(0.6)]), (1, [pytest.approx(0.3), 0.0, 0.0])]
    assert match_passes([det([], [], []), det([], [], [])]) == []


def test_disagreement_is_zero_when_passes_agree_and_largest_when_they_flip():
    same = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    assert cluster_disagreement(same).item() == pytest.approx(0.0, abs=1e-12)  # unsure, but agreed
    flip = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert cluster_disagreement(flip).item() == pytest.approx(math.log(2))  # H(0.5) - 0
    # box term: found by both passes at score 0.8, boxes overlapping at IoU 0.6:
    # mean score 0.8 x (1 - mean(1, 0.6)) = 0.8 x 0.2 (the scores agree: no BALD part)
    ious = torch.tensor([1.0, 0.6], dtype=torch.float64)
    assert cluster_disagreement(torch.tensor([0.8, 0.8]), ious).item() == pytest.approx(0.16)
    # the same wandering boxes on a 0.06 flicker count 13 times less
    assert cluster_disagreement(torch.tensor([0.06, 0.06]), ious).item() == pytest.approx(0.012)


def test_image_disagreement_without_detections_uses_each_pass_top_cell():
    empty = [det([], [], []), det([], [], [])]
    assert image_disagreement(empty) == 0.0
    assert image_disagreement(empty, p_max=torch.tensor([0.04, 0.04])) == pytest.approx(
        0.0, abs=1e-12
    )
    assert image_disagreement(empty, p_max=torch.tensor([0.01, 0.04])) > 0
