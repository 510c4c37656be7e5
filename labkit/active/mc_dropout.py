"""MC dropout for P10's detector, and matching its passes' boxes to measure disagreement.

**Dropout at inference** (Gal & Ghahramani 2016): keep dropout switched on when predicting and
run the same image T times; where the T passes disagree, the model's weights are not pinned down
by its training data — a label there should teach it something. P10's ``TinyDetector`` has no
dropout, so :class:`MCDropoutDetector` wraps it (its code stays untouched) and drops features
where the head's conv tower hands them to the class and box convs. The active-learning loop
trains *every* selector's detector through this wrapper (``active.dropout``), so that MC
dropout samples the same model the other selectors score.

**Matching passes** (:func:`match_passes`): pass t returns its own list of boxes; to compare
them we need "the same object" across passes. Greedy, per class: the highest-scoring unmatched
detection of any pass starts a cluster; every other pass contributes its unmatched detection of
the same class with the highest IoU to it (``labkit.detection.boxes.box_iou``), if that IoU is at
least ``iou_threshold``. A pass that did not find the object contributes score 0 and IoU 0.

**Disagreement of one object** (:func:`cluster_disagreement`), with ``p_t`` its score in pass t:

* class: the mutual information between the prediction and the weights (BALD, Houlsby et al.
  2011), for the binary "is it this class" question: ``H_b(mean_t p_t) - mean_t H_b(p_t)``.
  0 when all passes give the same score, however unsure; large when they flip;
* box: ``p̄ · (1 - mean IoU)``, the IoU of each box of the passes that found the object with
  the cluster's first (best) box, weighted by the object's mean score ``p̄``: where the boxes of
  a believed object wander, the model does not know where it is; the wandering boxes of a
  0.06-score flicker on an empty frame are noise (unweighted, they made MC dropout label empty
  frames: measured in the notebook).

The object's disagreement is their sum; an image's is the aggregate (max/mean/sum) over its
objects. An image without any detection in any pass is one pseudo-object whose scores are the
passes' highest cell probabilities (as in ``labkit.active.uncertainty``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.active.uncertainty import aggregate, binary, entropy
from labkit.detection.boxes import box_iou
from labkit.detection.model import TinyDetector

__all__ = [
    "MCDropoutDetector",
    "detector_of",
    "match_passes",
    "cluster_disagreement",
    "image_disagreement",
]


class MCDropoutDetector(nn.Module):
    """A :class:`TinyDetector` with dropout on its head's features, switchable at inference.

    ``forward`` is the detector's, with ``F.dropout`` (probability ``p``) applied to the output
    of ``detector.tower`` (``[B, head_channels, H/S, W/S]``) through a forward hook registered
    for the call only. Dropout is on in train mode, and in eval mode too while ``sample`` is
    True (MC passes: BatchNorm and GroupNorm stay in eval mode, only dropout samples).
    ``predict`` calls ``model.eval()``, so MC passes set ``sample = True`` instead.
    """

    def __init__(self, detector: TinyDetector, p: float = 0.1, sample: bool = False):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.detector = detector  # not "module": save_checkpoint unwraps .module (DDP)
        self.p = p
        self.sample = sample

    @property
    def stride(self) -> int:
        return self.detector.stride

    @property
    def num_classes(self) -> int:
        return self.detector.num_classes

    @property
    def dropout_active(self) -> bool:
        return self.p > 0 and (self.training or self.sample)

    def _drop(self, _module: nn.Module, _inputs: tuple, features: Tensor) -> Tensor:
        return F.dropout(features, self.p, training=True)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if not self.dropout_active:
            return self.detector(images)
        handle = self.detector.tower.register_forward_hook(self._drop)
        try:
            return self.detector(images)
        finally:
            handle.remove()


def detector_of(model: nn.Module) -> TinyDetector:
    """The :class:`TinyDetector` inside ``model`` (itself, or the one an MC wrapper holds)."""
    return model.detector if isinstance(model, MCDropoutDetector) else model


def match_passes(passes: list[dict[str, Tensor]], iou_threshold: float = 0.5) -> list[dict]:
    """Group one image's detections from T passes into objects (greedy, per class; see above).

    Args:
        passes: T dicts with ``"boxes"`` ``[D_t, 4]`` xyxy, ``"scores"`` ``[D_t]``,
            ``"labels"`` ``[D_t]`` (one image, one dict per pass).
        iou_threshold: least IoU with the cluster's first box to join it.

    Returns:
        One dict per object: ``"label"``, ``"box"`` (the first box, ``[4]``), ``"scores"``
        ``[T]`` (0 where a pass missed it) and ``"ious"`` ``[T]`` (IoU with the first box; 1 for
        the first box's own pass, 0 where missed), by decreasing first score.
    """
    num_passes = len(passes)
    found = [
        (float(s), t, d, int(lab))
        for t, p in enumerate(passes)
        for d, (s, lab) in enumerate(zip(p["scores"].tolist(), p["labels"].tolist(), strict=True))
    ]
    found.sort(key=lambda item: (-item[0], item[1], item[2]))  # best first, ties by pass, index
    used = [torch.zeros(len(p["scores"]), dtype=torch.bool) for p in passes]
    clusters = []
    for score, t0, d0, label in found:
        if used[t0][d0]:
            continue
        used[t0][d0] = True
        anchor = passes[t0]["boxes"][d0]
        scores = torch.zeros(num_passes, dtype=torch.float64)
        ious = torch.zeros(num_passes, dtype=torch.float64)
        scores[t0], ious[t0] = score, 1.0
        for t, p in enumerate(passes):
            if t == t0:
                continue
            free = (~used[t]) & (p["labels"] == label)
            if not free.any():
                continue
            overlap = box_iou(anchor[None], p["boxes"])[0].masked_fill(~free, -1.0)  # [D_t]
            best = int(overlap.argmax())
            if overlap[best] >= iou_threshold:
                used[t][best] = True
                scores[t], ious[t] = float(p["scores"][best]), float(overlap[best])
        clusters.append({"label": label, "box": anchor, "scores": scores, "ious": ious})
    return clusters


def cluster_disagreement(scores: Tensor, ious: Tensor | None = None) -> Tensor:
    """Disagreement of one object over T passes: BALD on its scores ``[T]`` + ``p̄ ·`` box term.

    ``scores`` ``[T]`` per-pass probabilities (0 where missed); ``ious`` ``[T]`` IoUs with the
    first box (0 where missed), or None for no box term. Returns a 0-dim tensor.
    """
    scores = scores.double()
    mutual_information = entropy(binary(scores.mean())) - entropy(binary(scores)).mean()
    if ious is None:
        return mutual_information.clamp_min(0)
    hit = scores > 0
    box_term = 1 - ious[hit].mean() if hit.any() else torch.zeros((), dtype=torch.float64)
    # clamp: rounding can give -1e-17
    return mutual_information.clamp_min(0) + scores.mean() * box_term


def image_disagreement(
    passes: list[dict[str, Tensor]],
    p_max: Tensor | None = None,
    iou_threshold: float = 0.5,
    how: str = "max",
) -> float:
    """One image's MC-dropout score from its T passes (``p_max`` ``[T]``: each pass's top cell)."""
    clusters = match_passes(passes, iou_threshold)
    if not clusters:
        if p_max is None:
            return 0.0
        return float(cluster_disagreement(p_max))  # the pseudo-object: the top cell per pass
    values = torch.stack([cluster_disagreement(c["scores"], c["ious"]) for c in clusters])
    return aggregate(values, how)
