"""P40 pool: exact composition, bursts of near-duplicate frames, determinism."""

import pytest
import torch

from labkit.active.pool import LabelledSet, SkewedShapesPool, materialise


def test_composition_and_bursts():
    pool = SkewedShapesPool(60, image_size=32, fractions=(0.5, 0.3, 0.2), burst=3, seed=4)
    assert pool.composition() == {"empty": 30, "common": 18, "rare": 12}  # 20 scenes x 3 frames
    for i in range(0, 60, 3):
        kinds = {pool.kinds[j] for j in range(i, i + 3)}
        assert len(kinds) == 1 and pool.scenes[i] == pool.scenes[i + 2] == i // 3
        (clean, target), (copy, copy_target) = pool[i], pool[i + 2]
        assert torch.equal(target["boxes"], copy_target["boxes"])  # same scene, same boxes
        assert not torch.equal(clean, copy) and (clean - copy).abs().mean() < 0.1
        labels = set(target["labels"].tolist())
        if pool.kinds[i] == "empty":
            assert not labels
        elif pool.kinds[i] == "common":
            assert labels == {0}  # circles only
    assert torch.equal(pool[5][0], SkewedShapesPool(60, 32, (0.5, 0.3, 0.2), 3, seed=4)[5][0])


def test_bad_arguments_and_in_memory_copies():
    with pytest.raises(ValueError, match="sum to 1"):
        SkewedShapesPool(10, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(IndexError):
        SkewedShapesPool(4, image_size=32)[4]
    pool = SkewedShapesPool(7, image_size=32, burst=2)
    memory = materialise(pool)
    assert memory.images.shape == (7, 3, 32, 32) and memory.source is pool
    assert torch.equal(memory[6][0], pool[6][0])
    subset = LabelledSet(memory, [6, 2])
    assert len(subset) == 2 and torch.equal(subset[0][0], pool[6][0])
