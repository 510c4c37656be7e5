"""Wrong answers to the exercises of notebooks/40_active_learning_detection.py: one per exercise, each a
mistake a learner could make (tests/test_exercise.py runs every exercise with it and expects ✗)."""

import torch


def _entropy_nan_on_one_hot(probs):
    return -(probs * probs.log()).sum(-1)  # 0 · log 0 = nan


def _top_k_ties_by_position(scores, pool_ids, k):
    order = torch.argsort(scores, descending=True, stable=True)[:k]  # ties: pool order, not id
    return [pool_ids[i] for i in order.tolist()]


WRONG = {
    "my_entropy": _entropy_nan_on_one_hot,
    "my_top_k": _top_k_ties_by_position,
}
