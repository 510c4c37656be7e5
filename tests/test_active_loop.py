"""P40 loop and task: the labelled set grows by K a round, resume equals a straight run, manual
labelling, the curve arithmetic and the gap test. Tiny settings: seconds on one CPU thread."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from labkit.active.curves import gap_test, labels_to_reach, summarise, trapezoid_auc
from labkit.active.labelling import LabelsPending, ManualLabeller
from labkit.active.loop import LoopState, initial_ids, run_loop
from labkit.active.report import load_comparison
from labkit.active.selectors import check_selection, make_selector
from labkit.active.task import build, check, run
from labkit.train import main as train_main
from labkit.utils.config import ConfigError, apply_overrides, load_config

CPU = torch.device("cpu")
TINY = [
    "device=cpu",
    "data.image_size=32",
    "data.val_images=4",
    "model.head_channels=16",
    "trainer.max_steps=2",
    "optim.warmup_steps=1",
    "active.pool.num_images=24",
    "active.initial_labelled=4",
    "active.k=3",
    "active.rounds=2",
    "active.seeds=[0]",
    "active.selectors=[random, entropy]",
]


def tiny_cfg(*overrides):
    return apply_overrides(load_config("p40_active"), [*TINY, *overrides])


@pytest.fixture(scope="module")
def setup():
    return build(check(tiny_cfg()), CPU)


def with_cfg(setup, *overrides):
    """The same pool and held-out set under a config with ``overrides`` (P40's other keys)."""
    return dataclasses.replace(setup, cfg=check(tiny_cfg(*overrides)))


def test_two_rounds_grow_the_labelled_set_by_k(setup, tmp_path):
    cache = {}
    state = run_loop(setup, make_selector("entropy"), 0, folder=tmp_path, round_cache=cache).state
    start = initial_ids(24, 4, 0)
    assert [h["labelled"] for h in state.history] == [4, 7, 10]  # R + 1 = 3 trained rounds
    labelled = list(start)
    for entry in state.history[:-1]:
        assert (
            check_selection(
                entry["chosen"], [i for i in range(24) if i not in labelled], labelled, 3
            )
            == []
        )
        assert entry["scores"] == sorted(entry["scores"], reverse=True)  # top-K, best first
        labelled += entry["chosen"]
    assert state.labelled == labelled and "chosen" not in state.history[-1]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 7, 10] and "eval/map50" in rows[0]
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["chosen"] == state.history[0]["chosen"]
    assert LoopState.load(tmp_path / "state.json") == state
    with pytest.raises(ConfigError, match="resume=True"):
        run_loop(setup, make_selector("entropy"), 0, folder=tmp_path)
    # Under max aggregation, least confidence ranks frames as entropy does: the same labelled
    # sets, so every round comes from the shared cache (3 trainings in it, none added).
    twin = run_loop(setup, make_selector("least_confidence"), 0, round_cache=cache).state
    assert len(cache) == 3 and twin.labelled == state.labelled
    for a, b in zip(twin.history, state.history, strict=True):
        assert a.get("chosen") == b.get("chosen") and a["eval/map50"] == b["eval/map50"]


def untimed(state):
    return [
        {k: v for k, v in entry.items() if k != "seconds"} for entry in state.history
    ], state.labelled


def test_resume_between_rounds_equals_a_straight_run(tmp_path):
    cfg = tiny_cfg("active.rounds=1")
    straight = run(cfg, tmp_path / "straight", CPU, progress=False)
    assert straight.summary["stopped_by"] == "max_steps" and straight.summary["step"] == 4
    first = run(cfg, tmp_path / "split", CPU, progress=False, stop_after=1)
    assert first.interrupted and first.summary["step"] == 1  # killed after random's round 0
    second = run(cfg, resume_from=tmp_path / "split", progress=False)
    assert second.summary["step"] == 4 and not second.interrupted
    for key, state in straight.details.states.items():
        assert untimed(second.details.states[key]) == untimed(state)  # ids, scores, metrics
    assert (tmp_path / "split" / "curves.png").is_file()
    assert load_comparison(tmp_path / "split").summary == second.details.summary
    with pytest.raises(ConfigError, match="already holds loops"):
        run(cfg, tmp_path / "split", CPU, progress=False)


def test_manual_labelling_asks_for_ids_and_reads_labels_back(setup, tmp_path):
    manual = with_cfg(setup, "active.rounds=1", "active.labelling=manual")
    pool = manual.pool
    with pytest.raises(LabelsPending, match="to_label.json"):
        run_loop(manual, make_selector("random"), 0, folder=tmp_path)
    asked = json.loads((tmp_path / "to_label.json").read_text())["ids"]
    assert asked == initial_ids(24, 4, 0)

    def answer(ids):  # the "person": copies the ground truth
        labels = (
            json.loads(ManualLabeller(tmp_path).labels_file.read_text() or "{}")
            if (tmp_path / "labels.json").exists()
            else {}
        )
        for i in ids:
            t = pool[i][1]
            labels[str(i)] = {"boxes": t["boxes"].tolist(), "labels": t["labels"].tolist()}
        (tmp_path / "labels.json").write_text(json.dumps(labels))

    answer(asked)
    with pytest.raises(LabelsPending):  # round 0 trained; round 1 needs the 3 chosen frames
        run_loop(manual, make_selector("random"), 0, folder=tmp_path, resume=True)
    state = LoopState.load(tmp_path / "state.json")
    assert state.rounds_done == 1
    assert json.loads((tmp_path / "to_label.json").read_text())["ids"] == state.history[0]["chosen"]
    answer(state.history[0]["chosen"])
    done = run_loop(manual, make_selector("random"), 0, folder=tmp_path, resume=True).state
    assert done.rounds_done == 2 and len(done.labelled) == 7


def test_config_errors_name_the_key():
    assert check(load_config("p40_active"))["active"]["selectors"][0] == "random"
    with pytest.raises(ConfigError, match="include random"):
        check(tiny_cfg("active.selectors=[entropy]"))
    with pytest.raises(ConfigError, match="exceeds active.pool.num_images"):
        check(tiny_cfg("active.k=30"))
    with pytest.raises(ConfigError, match="active.selectors"):
        check(tiny_cfg("active.selectors=[random, oracle]"))
    with pytest.raises(ConfigError, match="sum to 1"):
        check(tiny_cfg("active.pool.fractions=[0.5, 0.5, 0.5]"))
    with pytest.raises(ConfigError, match="init-from"):
        run(tiny_cfg(), init_from="elsewhere")


def test_auc_and_labels_to_reach_by_hand():
    # (0.1 + 0.3) / 2 * 20 + (0.3 + 0.5) / 2 * 20 = 4 + 8 = 12 over a span of 40 -> 0.3
    assert trapezoid_auc([20, 40, 60], [0.1, 0.3, 0.5]) == pytest.approx(0.3)
    assert trapezoid_auc([20], [0.4]) == 0.4
    assert labels_to_reach([20, 40, 60], [0.1, 0.3, 0.5], 0.4) == pytest.approx(50)
    assert labels_to_reach([20, 40, 60], [0.1, 0.3, 0.5], 0.05) == 20
    assert labels_to_reach([20, 40, 60], [0.1, 0.3, 0.5], 0.6) is None


def test_gap_test_compares_with_twice_randoms_seed_spread():
    def history(values):
        return [{"labelled": n, "eval/map50": v} for n, v in zip([10, 20], values, strict=True)]

    histories = {
        ("random", 0): history([0.1, 0.2]),  # AUC 0.15
        ("random", 1): history([0.1, 0.3]),  # AUC 0.20
        ("entropy", 0): history([0.1, 0.4]),  # AUC 0.25
        ("entropy", 1): history([0.1, 0.5]),  # AUC 0.30
    }
    summary = summarise(histories)
    random_std = math.sqrt(((0.15 - 0.175) ** 2 + (0.2 - 0.175) ** 2) / 1)  # ddof = 1
    assert summary["selectors"]["random"]["auc_std"] == pytest.approx(random_std)
    test = gap_test(summary)["entropy"]
    assert test["gap"] == pytest.approx(0.1) and test["threshold"] == pytest.approx(2 * random_std)
    assert test["passed"] == (0.1 > 2 * random_std) and test["wins"] == 2
    # entropy's mean curve (0.1, 0.45) reaches random's final 0.25 at 10 + 0.15 / 0.35 * 10
    assert summary["selectors"]["entropy"]["labels_saved"] == pytest.approx(
        20 - (10 + 10 * 0.15 / 0.35)
    )


def test_cli_runs_and_resumes_the_comparison(tmp_path, capsys):
    # The entry point a learner uses (in this process: a second interpreter would spend longer
    # importing torch than the run takes): a tiny comparison, then --resume of its folder
    # (finished: nothing left to run, the same summary).
    args = ["p40_active", *TINY, "active.rounds=0", "--runs-dir", str(tmp_path)]
    assert train_main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run_dir = Path(summary["run_dir"])
    assert summary["step"] == 2 and "gap/entropy" in summary  # 2 loops x 1 round
    assert (run_dir / "curves.png").is_file() and (run_dir / "config.yaml").is_file()
    assert train_main(["--resume", str(run_dir)]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["step"] == 2 and resumed["auc/entropy"] == summary["auc/entropy"]


def test_warm_start_continues_from_the_last_round(setup, tmp_path):
    warm = with_cfg(setup, "active.rounds=1", "active.warm_start=true")
    run_loop(warm, make_selector("random"), 0, folder=tmp_path)
    assert (tmp_path / "model_round0.pt").is_file() and (tmp_path / "model_round1.pt").is_file()
    round0 = torch.load(tmp_path / "model_round0.pt", weights_only=True)
    round1 = torch.load(tmp_path / "model_round1.pt", weights_only=True)
    # Two AdamW steps (lr <= 0.002) move each weight by at most ~0.004: round 1 started from
    # round 0's weights. A fresh initialisation (std ~0.12 for conv1) would differ by ~0.1 or more.
    key = "backbone.0.weight"
    assert 0 < (round1[key] - round0[key]).abs().max() < 0.01
