"""P40 selectors: K distinct never-labelled ids, edge cases, ties, diversity, a real model."""

import pytest
import torch

from labkit.active.mc_dropout import MCDropoutDetector
from labkit.active.pool import SkewedShapesPool, materialise
from labkit.active.selectors import (
    SELECTOR_NAMES,
    DiverseSelector,
    RandomSelector,
    ScoringContext,
    Selector,
    UncertaintySelector,
    check_selection,
    greedy_diverse_top_k,
    make_selector,
    top_k,
)
from labkit.detection.model import TinyDetector


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


POOL_IDS = [11, 4, 7, 20, 15, 2]
SCORES = torch.tensor([0.3, 0.9, 0.1, 0.9, 0.5, 0.2])


@pytest.mark.parametrize(
    "selector", [RandomSelector(), UncertaintySelector()], ids=["random", "entropy"]
)
@pytest.mark.parametrize("k", [0, 1, 3, 6, 10])
def test_k_distinct_ids_from_the_pool(selector, k):
    chosen = selector.select(SCORES, POOL_IDS, k, rng())
    assert len(chosen) == min(k, len(POOL_IDS))  # k > pool: the whole pool, no error
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(POOL_IDS)
    assert check_selection(chosen, POOL_IDS, labelled=[1, 3, 5], k=k) == []


def test_ties_are_broken_by_the_smaller_id_deterministically():
    # ids 4 and 20 tie at 0.9: 4 first, whatever their order in the pool.
    assert UncertaintySelector().select(SCORES, POOL_IDS, 3, rng()) == [4, 20, 15]
    order = [5, 3, 1, 0, 4, 2]
    shuffled = [POOL_IDS[i] for i in order]
    assert UncertaintySelector().select(SCORES[order], shuffled, 3, rng()) == [4, 20, 15]
    assert top_k(torch.zeros(4), [9, 2, 5, 1], 4) == [1, 2, 5, 9]  # all tied: by id


def test_random_is_reproducible_from_its_generator():
    a = RandomSelector().select(None, list(range(100)), 10, rng(3))
    assert a == RandomSelector().select(None, list(range(100)), 10, rng(3))
    assert a != RandomSelector().select(None, list(range(100)), 10, rng(4))


def test_bad_inputs_fail_loudly():
    with pytest.raises(ValueError, match="k must be"):
        UncertaintySelector().select(SCORES, POOL_IDS, -1, rng())
    with pytest.raises(ValueError, match="distinct"):
        RandomSelector().select(None, [1, 1, 2], 2, rng())
    with pytest.raises(ValueError, match="NaN"):
        top_k(torch.tensor([0.1, float("nan")]), [0, 1], 1)
    with pytest.raises(ValueError, match="one score per pool id"):
        top_k(torch.tensor([0.1]), [0, 1], 1)
    with pytest.raises(ValueError, match="unknown selector"):
        make_selector("oracle")


def test_check_selection_names_each_broken_invariant():
    problems = check_selection([4, 4, 99, 1], [4, 7, 1], labelled=[1], k=2)
    text = " ".join(problems)
    assert "4 ids chosen" in text and "duplicate" in text and "not in the pool" in text
    assert "already labelled" in text


def test_diverse_top_k_skips_near_duplicates_then_fills_up():
    # Frames 0, 1 and 2 are one scene (identical features) with the best scores. Of the 15
    # pairwise distances 3 are 0 and the next is 0.632 (frames 3 and 4): the 20% quantile, 0.51,
    # separates copies from different scenes.
    features = torch.tensor([[1.0, 0], [1.0, 0], [1.0, 0], [0, 1.0], [0.6, 0.8], [-1.0, 0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.5, 0.4, 0.1])
    ids = list(range(6))
    assert top_k(scores, ids, 3) == [0, 1, 2]  # plain top-K: three copies of one scene
    assert greedy_diverse_top_k(scores, features, ids, 3, quantile=0.2) == [0, 3, 4]
    # Asking for more frames than there are distinct ones: skipped copies fill up, best first.
    assert greedy_diverse_top_k(scores, features, ids, 6, quantile=0.2) == [0, 3, 4, 5, 1, 2]
    assert greedy_diverse_top_k(scores, features, ids, 0) == []


def test_every_named_selector_exists_and_follows_the_protocol():
    for name in SELECTOR_NAMES:
        selector = make_selector(name, {"mc_passes": 2})
        assert isinstance(selector, Selector) and selector.name == name


def test_selectors_score_a_real_model_through_one_cached_inference():
    torch.manual_seed(0)
    pool = materialise(SkewedShapesPool(12, image_size=32, burst=2, seed=1))
    model = MCDropoutDetector(TinyDetector(3, head_channels=16, freeze_backbone=False), p=0.2)
    context = ScoringContext(model, pool, torch.device("cpu"), {"batch_size": 6})
    pool_ids = [0, 2, 3, 5, 8, 9, 11]
    for name in ("entropy", "margin", "least_confidence", "mc_dropout", "diverse_entropy"):
        selector = make_selector(name, {"mc_passes": 3})
        chosen = selector.select(context, pool_ids, 4, rng())
        assert check_selection(chosen, pool_ids, [1, 4, 6, 7, 10], 4) == []
        scores = selector.scores(context, pool_ids)
        assert scores.shape == (7,) and torch.isfinite(scores).all()
        if not isinstance(selector, DiverseSelector):  # plain top-K of its own scores
            assert chosen == top_k(scores, pool_ids, 4)
    outputs = context.outputs(pool_ids)
    assert outputs.features.shape == (7, 128) and outputs.p_max.shape == (7,)
    assert context.outputs(pool_ids) is outputs  # cached: one inference for all selectors
