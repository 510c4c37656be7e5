"""How unsure is the detector about an image? Per-detection scores, then one number per image.

**From sigmoid scores to a distribution.** P10's detector has no softmax: each class has its own
sigmoid (focal loss, no background class), and ``labkit.detection.evaluate.predict`` returns each
detection with one class and its score ``p = sigmoid(logit)``. The question a detection answers
is binary — "is there a <class> here, yes or no?" — so its distribution is ``[p, 1 - p]``
(:func:`binary`). A softmax over classes + background would need the cell's other class scores,
which predict does not keep; :func:`class_distribution` shows that alternative for a vector of C
sigmoids (background = every class absent, then normalised).

**Scores** (higher = more uncertain, all 0 for a one-hot distribution), for a distribution
``q`` over K outcomes with sorted values ``q_(1) >= q_(2) >= ...``:

* entropy            ``H(q) = -Σ_k q_k log q_k``            (nats; max ``log K`` when uniform)
* margin             ``1 - (q_(1) - q_(2))``                 (1 when the top two tie)
* least confidence   ``1 - q_(1)``                           (max ``1 - 1/K`` when uniform)

For ``[p, 1 - p]`` all three peak at ``p = 0.5`` and are 0 at ``p in {0, 1}``; they rank single
detections the same way and differ only in shape (entropy is the roundest), so they differ
once aggregated (a sum or a mean of different shapes ranks images differently).

**Aggregation** of an image's D detection scores (``aggregate``):

* ``max``  — the single most doubtful detection: favours images with one confusing object,
  whatever else is in them; insensitive to how many objects there are;
* ``mean`` — favours images whose detections are *all* doubtful; a confident object dilutes it,
  so it prefers sparse images with one or two borderline (often false) detections;
* ``sum``  — grows with the number of detections: favours crowded images (more boxes per label
  request: good if a label costs per image, biased if it costs per box).

**Images with no detection** (nothing above the score threshold): an empty frame is not
"certain" by default, it may hide an object the detector barely sees. Such an image is scored as
if its most object-like cell were a detection: ``p_max`` = the highest class probability over
all grid cells, before the threshold and NMS (``labkit.active.inference`` records it during the
same forward pass). A frame the model confidently calls empty (``p_max`` near 0) scores near 0;
one where something almost fired scores higher. Without ``p_max``, the fixed prior ``empty_score``
(default 0) is used: empty frames last. Explained in notebooks/40_active_learning_detection.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "binary",
    "class_distribution",
    "entropy",
    "margin",
    "least_confidence",
    "UNCERTAINTIES",
    "detection_uncertainty",
    "AGGREGATIONS",
    "aggregate",
    "image_uncertainty",
    "image_uncertainties",
]


def binary(p: Tensor) -> Tensor:
    """Sigmoid scores ``[...]`` → two-outcome distributions ``[..., 2]`` = ``[p, 1 - p]``."""
    return torch.stack([p, 1 - p], dim=-1)


def class_distribution(probs: Tensor) -> Tensor:
    """C independent sigmoids ``[..., C]`` → a distribution over C classes + background ``[..., C+1]``.

    Background is "no class present", ``Π_c (1 - p_c)``; the C + 1 values are then normalised
    to sum to 1 (the sigmoids are not exclusive, so this is a modelling choice, not a law).
    """
    background = (1 - probs).prod(dim=-1, keepdim=True)  # [..., 1]
    joint = torch.cat([probs, background], dim=-1)  # [..., C + 1]
    return joint / joint.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats over the last dim: ``[..., K]`` → ``[...]``; ``0 log 0 = 0``.

    ``xlogy`` gives 0 for ``q = 0`` exactly, where ``q * log(q)`` would be ``0 * -inf = nan``.
    """
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def margin(probs: Tensor) -> Tensor:
    """Margin uncertainty ``1 - (q_(1) - q_(2))`` over the last dim (K >= 2): ``[..., K]`` → ``[...]``."""
    if probs.shape[-1] < 2:
        raise ValueError(f"margin needs at least 2 outcomes in the last dim, got {probs.shape[-1]}")
    top2 = probs.topk(2, dim=-1).values  # [..., 2]
    return 1 - (top2[..., 0] - top2[..., 1])


def least_confidence(probs: Tensor) -> Tensor:
    """Least-confidence uncertainty ``1 - q_(1)`` over the last dim: ``[..., K]`` → ``[...]``."""
    return 1 - probs.max(dim=-1).values


UNCERTAINTIES: dict[str, Callable[[Tensor], Tensor]] = {
    "entropy": entropy,
    "margin": margin,
    "least_confidence": least_confidence,
}


def detection_uncertainty(scores: Tensor, kind: str = "entropy") -> Tensor:
    """Uncertainty of each detection from its sigmoid score: ``[D]`` → ``[D]`` (via :func:`binary`)."""
    if kind not in UNCERTAINTIES:
        raise ValueError(f"unknown uncertainty '{kind}'; choose one of {sorted(UNCERTAINTIES)}")
    return UNCERTAINTIES[kind](binary(scores))


AGGREGATIONS = ("max", "mean", "sum")


def aggregate(values: Tensor, how: str = "max", empty: float = 0.0) -> float:
    """One image score from its detections' uncertainties ``[D]``; ``empty`` when D = 0."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got '{how}'")
    if values.numel() == 0:
        return float(empty)
    return float({"max": values.max, "mean": values.mean, "sum": values.sum}[how]())


def image_uncertainty(
    scores: Tensor,
    p_max: float | None = None,
    kind: str = "entropy",
    how: str = "max",
    empty_score: float = 0.0,
) -> float:
    """One image's score: its detections' ``scores [D]`` → uncertainties → :func:`aggregate`.

    With no detection, the image is scored as one detection of score ``p_max`` (its most
    object-like cell, see the module docstring) or, without ``p_max``, gets ``empty_score``.
    """
    if scores.numel() == 0 and p_max is not None:
        scores = torch.tensor([float(p_max)], dtype=torch.float64)
    return aggregate(detection_uncertainty(scores, kind), how, empty=empty_score)


def image_uncertainties(
    preds: list[dict[str, Tensor]],
    p_max: Tensor | None = None,
    kind: str = "entropy",
    how: str = "max",
    empty_score: float = 0.0,
) -> Tensor:
    """:func:`image_uncertainty` of every image: N prediction dicts (``"scores"``) → ``[N]`` float64."""
    return torch.tensor(
        [
            image_uncertainty(
                pred["scores"].double(),
                None if p_max is None else float(p_max[i]),
                kind,
                how,
                empty_score,
            )
            for i, pred in enumerate(preds)
        ],
        dtype=torch.float64,
    )
