"""Selectors: which K frames of the unlabelled pool to label next.

One interface, :class:`Selector`: ``select(scores_or_model, pool_ids, k, rng) -> ids``.

* ``scores_or_model`` is either a ``Tensor [N]`` of scores (one per id of ``pool_ids``, higher =
  more worth labelling) or a :class:`ScoringContext` (the trained model and the pool), from which
  the selector computes what it needs; the context caches the pool inference, so several
  selectors scoring one model run it once;
* ``pool_ids``: the unlabelled frames, distinct; ``k``: how many to pick; ``rng``: a
  ``torch.Generator`` (only the random selector draws from it).

Every selector returns ``min(k, len(pool_ids))`` distinct ids from ``pool_ids`` (so never a frame
labelled before: the loop passes only unlabelled ones), best first; ties in score go to the
smaller id, so a selection is a pure function of its inputs. :func:`check_selection` states
these invariants; the loop and ``python -m labkit.done p40`` check every selection with it.

| name | scores a frame by |
|---|---|
| ``random`` | nothing: a uniform draw (the baseline every other selector must beat) |
| ``entropy`` / ``margin`` / ``least_confidence`` | its detections' uncertainty, aggregated (max/mean/sum) |
| ``mc_dropout`` | the disagreement of T dropout passes, boxes matched by IoU |
| ``diverse_<score>`` | the score, top-K after skipping near-duplicates in feature space (greedy) |
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from labkit.active.inference import PoolOutputs, infer_pool, mc_passes
from labkit.active.mc_dropout import image_disagreement
from labkit.active.uncertainty import AGGREGATIONS, UNCERTAINTIES, image_uncertainties

__all__ = [
    "ScoringContext",
    "Selector",
    "RandomSelector",
    "UncertaintySelector",
    "MCDropoutSelector",
    "DiverseSelector",
    "top_k",
    "greedy_diverse_top_k",
    "check_selection",
    "make_selector",
    "SELECTOR_NAMES",
]


# ---------------------------------------------------------------------------------------------
# What a selector scores with


@dataclass
class ScoringContext:
    """A trained model and the pool it scores; inference results are cached per ids list.

    ``predict_kwargs``: ``score_thresh``, ``nms_iou``, ``max_dets``, ``batch_size`` for
    :func:`~labkit.active.inference.infer_pool`; ``seed`` seeds the MC-dropout masks.
    """

    model: nn.Module
    pool: Dataset
    device: torch.device
    predict_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False)

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def outputs(self, ids: list[int]) -> PoolOutputs:
        """One deterministic pass over ``ids`` (detections, ``p_max``, features)."""
        return self.cached(
            ("outputs", tuple(ids)),
            lambda: infer_pool(self.model, self.pool, ids, self.device, **self.predict_kwargs),
        )

    def mc_outputs(self, ids: list[int], passes: int) -> list[PoolOutputs]:
        """``passes`` dropout-sampled passes over ``ids``."""
        return self.cached(
            ("mc", tuple(ids), passes),
            lambda: mc_passes(
                self.model, self.pool, ids, self.device, passes, self.seed, **self.predict_kwargs
            ),
        )


# ---------------------------------------------------------------------------------------------
# Picking the top K


def _validate(pool_ids: list[int], k: int) -> None:
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if len(set(pool_ids)) != len(pool_ids):
        raise ValueError("pool_ids must be distinct (each unlabelled frame once)")


def top_k(scores: Tensor, pool_ids: list[int], k: int) -> list[int]:
    """The ``min(k, N)`` ids with the highest ``scores [N]``; ties go to the smaller id.

    Raises ``ValueError`` on NaN scores (a NaN would silently sort anywhere).
    """
    _validate(pool_ids, k)
    if scores.shape != (len(pool_ids),):
        raise ValueError(f"need one score per pool id: {len(pool_ids)}, got {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; check the model's outputs")
    values = scores.tolist()
    order = sorted(range(len(pool_ids)), key=lambda i: (-values[i], pool_ids[i]))
    return [pool_ids[i] for i in order[:k]]


def greedy_diverse_top_k(
    scores: Tensor, features: Tensor, pool_ids: list[int], k: int, quantile: float = 0.01
) -> list[int]:
    """Top-K by score, skipping frames that nearly duplicate one already chosen.

    Walk the frames best score first (ties: smaller id); take a frame unless its Euclidean
    feature distance to a frame already taken is below ``threshold`` = the ``quantile`` of all
    pairwise distances among the ``N`` candidates (a near-duplicate relative to this pool, so
    no absolute scale to tune). If fewer than K frames survive, the best skipped ones fill up.

    Args:
        scores: ``[N]``; features: ``[N, D]`` (e.g. L2-normalised pooled backbone features).
    """
    order = top_k(scores, pool_ids, len(pool_ids))  # every id, best first
    k = min(k, len(pool_ids))
    if k == 0:
        return []
    row = {pid: i for i, pid in enumerate(pool_ids)}
    distances = torch.cdist(features.double(), features.double())  # [N, N]
    upper = distances[torch.triu(torch.ones_like(distances, dtype=torch.bool), diagonal=1)]
    if upper.numel() > 1_000_000:  # torch.quantile's input limit: a fixed, seeded sample
        g = torch.Generator().manual_seed(0)
        upper = upper[torch.randint(upper.numel(), (1_000_000,), generator=g)]
    threshold = float(torch.quantile(upper, quantile)) if upper.numel() else 0.0
    chosen, skipped = [], []
    for pid in order:
        near = chosen and float(distances[row[pid], [row[c] for c in chosen]].min()) < threshold
        (skipped if near else chosen).append(pid)
        if len(chosen) == k:
            return chosen
    return chosen + skipped[: k - len(chosen)]


def check_selection(
    chosen: list[int], pool_ids: list[int], labelled: list[int], k: int
) -> list[str]:
    """What is wrong with a selection (empty list: nothing). The invariants every selector keeps:
    exactly ``min(k, len(pool_ids))`` ids, all distinct, all from the pool, none labelled before."""
    problems = []
    if len(chosen) != min(k, len(pool_ids)):
        problems.append(f"{len(chosen)} ids chosen, expected min(k={k}, pool={len(pool_ids)})")
    if len(set(chosen)) != len(chosen):
        problems.append("duplicate ids")
    if set(chosen) - set(pool_ids):
        problems.append(f"ids not in the pool: {sorted(set(chosen) - set(pool_ids))[:5]}")
    if set(chosen) & set(labelled):
        problems.append(f"ids already labelled: {sorted(set(chosen) & set(labelled))[:5]}")
    return problems


# ---------------------------------------------------------------------------------------------
# The selectors


@runtime_checkable
class Selector(Protocol):
    name: str

    def select(self, scores_or_model: Tensor | ScoringContext | None, pool_ids: list[
        int
    ], k: int, rng: torch.Generator,
    ) -> list[int]: ...  # fmt: skip

    def scores(self, context: ScoringContext, pool_ids: list[int]) -> Tensor | None: ...


class RandomSelector:
    """The baseline: ``min(k, N)`` frames drawn uniformly without replacement from ``rng``."""

    name = "random"

    def scores(self, context: ScoringContext, pool_ids: list[int]) -> Tensor | None:
        return None  # no model needed

    def select(self, scores_or_model, pool_ids, k, rng) -> list[int]:
        _validate(pool_ids, k)
        order = torch.randperm(len(pool_ids), generator=rng).tolist()
        return [pool_ids[i] for i in order[:k]]


class _ScoreSelector(ABC):
    """Top-K of a score: given a ``Tensor`` it is the score, given a context it computes it."""

    name = "score"

    @abstractmethod
    def scores(self, context: ScoringContext, pool_ids: list[int]) -> Tensor:
        """One score per pool image [P]; higher is picked first."""

    def select(self, scores_or_model, pool_ids, k, rng) -> list[int]:
        if k == 0 or not pool_ids:
            _validate(pool_ids, k)
            return []
        scores = (
            scores_or_model
            if isinstance(scores_or_model, Tensor)
            else self.scores(scores_or_model, pool_ids)
        )
        return top_k(scores, pool_ids, k)


class UncertaintySelector(_ScoreSelector):
    """Top-K by ``kind`` (entropy | margin | least_confidence) aggregated with ``how``."""

    def __init__(self, kind: str = "entropy", how: str = "max", empty_score: float = 0.0):
        if kind not in UNCERTAINTIES:
            raise ValueError(f"unknown uncertainty '{kind}'; choose one of {sorted(UNCERTAINTIES)}")
        if how not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got '{how}'")
        self.name, self.kind, self.how, self.empty_score = kind, kind, how, empty_score

    def scores(self, context: ScoringContext, pool_ids: list[int]) -> Tensor:
        def compute() -> Tensor:
            out = context.outputs(pool_ids)
            return image_uncertainties(out.preds, out.p_max, self.kind, self.how, self.empty_score)

        return context.cached(("scores", self.kind, self.how, tuple(pool_ids)), compute)


class MCDropoutSelector(_ScoreSelector):
    """Top-K by the disagreement of ``passes`` dropout passes (see ``labkit.active.mc_dropout``)."""

    name = "mc_dropout"

    def __init__(self, passes: int = 8, match_iou: float = 0.5, how: str = "max"):
        if passes < 2:
            raise ValueError(f"MC dropout needs at least 2 passes to disagree, got {passes}")
        self.passes, self.match_iou, self.how = passes, match_iou, how

    def scores(self, context: ScoringContext, pool_ids: list[int]) -> Tensor:
        def compute() -> Tensor:
            runs = context.mc_outputs(pool_ids, self.passes)
            p_max = torch.stack([run.p_max for run in runs], dim=1)  # [N, T]
            return torch.tensor(
                [
                    image_disagreement(
                        [run.preds[i] for run in runs], p_max[i], self.match_iou, self.how
                    )
                    for i in range(len(pool_ids))
                ],
                dtype=torch.float64,
            )

        return context.cached(("mc_scores", self.passes, self.how, tuple(pool_ids)), compute)


class DiverseSelector(_ScoreSelector):
    """``base``'s score, top-K without near-duplicates (:func:`greedy_diverse_top_k`)."""

    def __init__(self, base: _ScoreSelector, quantile: float = 0.01):
        if not 0 <= quantile < 1:
            raise ValueError(f"diversity quantile must be in [0, 1), got {quantile}")
        self.base, self.quantile, self.name = base, quantile, f"diverse_{base.name}"

    def scores(self, context: ScoringContext, pool_ids: list[int]) -> Tensor:
        return self.base.scores(context, pool_ids)

    def select(self, scores_or_model, pool_ids, k, rng) -> list[int]:
        _validate(pool_ids, k)
        if k == 0 or not pool_ids:
            return []
        if isinstance(scores_or_model, Tensor):
            raise TypeError(f"{self.name} needs the model's features: pass a ScoringContext")
        scores = self.scores(scores_or_model, pool_ids)
        features = scores_or_model.outputs(pool_ids).features
        return greedy_diverse_top_k(scores, features, pool_ids, k, self.quantile)


SELECTOR_NAMES = (
    "random",
    "entropy",
    "margin",
    "least_confidence",
    "mc_dropout",
    "diverse_entropy",
    "diverse_margin",
    "diverse_least_confidence",
    "diverse_mc_dropout",
)


def make_selector(name: str, active: dict | None = None) -> Selector:
    """A selector by name, its settings from a config's ``active:`` section (defaults if None)."""
    active = active or {}
    how = active.get("aggregation", "max")
    if name == "random":
        return RandomSelector()
    if name in UNCERTAINTIES:
        return UncertaintySelector(name, how)
    if name == "mc_dropout":
        return MCDropoutSelector(active.get("mc_passes", 8), active.get("mc_match_iou", 0.5), how)
    if name.startswith("diverse_") and name[len("diverse_") :] in SELECTOR_NAMES[1:5]:
        base = make_selector(name[len("diverse_") :], active)
        return DiverseSelector(base, active.get("diversity_quantile", 0.01))
    raise ValueError(f"unknown selector '{name}'; choose from {', '.join(SELECTOR_NAMES)}")
