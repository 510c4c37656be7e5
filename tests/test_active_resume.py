"""P40 resumes natively from its run folder: ``resume_point`` reads the loops' state.json files
(and refuses without writing), ``run(resume_from=run_dir)`` continues in place, and a signal in a
round's training or a KeyboardInterrupt elsewhere leaves every finished round intact and
resumable.

Tiny settings (32-px frames, 2 steps a round, 2 loops of 2 rounds): seconds on one CPU thread.
"""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

import labkit.active.loop as loop_module
from labkit.active.loop import LoopState
from labkit.active.task import resume_point, run
from labkit.utils.checkpoint import CheckpointError
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
    "active.rounds=1",
    "active.seeds=[0]",
    "active.selectors=[random, entropy]",
]
ROUNDS = 4  # 2 loops x (rounds + 1)


def tiny_cfg(*overrides: str) -> dict:
    return apply_overrides(load_config("p40_active"), [*TINY, *overrides])


def run_folder(path: Path, cfg: dict) -> Path:
    """A run folder as the CLI makes it: the folder and its config.yaml."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def untimed(states: dict) -> dict:
    """Every loop's history and labelled ids, without the seconds (ids, scores, metrics)."""
    return {
        key: ([{k: v for k, v in e.items() if k != "seconds"} for e in s.history], s.labelled)
        for key, s in states.items()
    }


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The comparison run without a stop: what every resumed run must equal."""
    result = run(tiny_cfg(), tmp_path_factory.mktemp("straight"), CPU, progress=False)
    assert result.summary["stopped_by"] == "max_steps" and result.summary["step"] == ROUNDS
    return result


def test_resume_point_reads_the_rounds_finished_and_continues_in_place(tmp_path, straight):
    cfg = tiny_cfg()
    run_dir = run_folder(tmp_path / "run", cfg)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        resume_point(run_dir)  # a folder without a finished round
    first = run(cfg, run_dir, CPU, progress=False, stop_after=3)
    assert first.summary == {**first.summary, "step": 3, "stopped_by": "stop_after"}
    assert not (run_dir / "checkpoints").exists()  # no marker files: the loops are the state
    before = tree(run_dir)
    point = resume_point(run_dir)
    assert tree(run_dir) == before  # read only
    assert (point.run_dir, point.step, point.resume_from) == (run_dir, 3, run_dir)
    assert point.config == cfg
    second = run(point.config, point.run_dir, CPU, resume_from=point.resume_from, progress=False)
    assert second.summary["step"] == ROUNDS and not second.interrupted
    assert untimed(second.details.states) == untimed(straight.details.states)
    assert second.summary["auc/entropy"] == straight.summary["auc/entropy"]
    # The top-level metrics.jsonl: the mean curves, every row at step = rounds finished (what
    # the CLI's cut at ResumePoint.step keeps), written whole: a second summary repeats nothing.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["labelled"]) for r in rows] == [(ROUNDS, 4), (ROUNDS, 7)]
    assert "curve/entropy/map50_mean" in rows[0]
    again = run(cfg, run_dir, CPU, resume_from=run_dir, progress=False)  # finished: nothing to run
    assert again.summary["auc/entropy"] == second.summary["auc/entropy"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == len(rows)


def test_resume_point_refuses_without_writing(tmp_path):
    with pytest.raises(CheckpointError, match="not a P40 run folder"):
        resume_point(tmp_path)
    cfg = tiny_cfg()
    run_dir = run_folder(tmp_path / "run", cfg)
    run(cfg, run_dir, CPU, progress=False, stop_after=1)
    # A newer config (as a resume writes config.resume<N>.yaml) with other training settings:
    # the loop's state.json belongs to another experiment.
    newer = run_dir / "config.resume1.yaml"
    newer.write_text(yaml.safe_dump(tiny_cfg("trainer.max_steps=3"), sort_keys=False))
    os.utime(newer, ns=(2**62, 2**62))  # certainly the newest
    before = tree(run_dir)
    with pytest.raises(ConfigError, match="was made with other settings"):
        resume_point(run_dir)
    with pytest.raises(ConfigError, match="was made with other settings"):
        run(tiny_cfg("trainer.max_steps=3"), run_dir, CPU, resume_from=run_dir, progress=False)
    assert tree(run_dir) == before  # refused before anything was written


def test_a_signal_during_training_stops_with_its_name(tmp_path, monkeypatch, straight):
    real_train, calls = loop_module.train, []

    def train_then_sigterm(*args, **kwargs):  # the 2nd training gets SIGTERM after its 1st step
        calls.append(1)
        if len(calls) == 2:
            kwargs["after_step"] = lambda step, out, log: os.kill(os.getpid(), signal.SIGTERM)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train", train_then_sigterm)
    cfg = tiny_cfg()
    run_dir = run_folder(tmp_path / "run", cfg)
    stopped = run(cfg, run_dir, CPU, progress=False)
    assert stopped.summary["stopped_by"] == "SIGTERM" and stopped.interrupted
    assert stopped.summary["step"] == 1  # random's round 0; its round 1 is redone on resume
    assert LoopState.load(run_dir / "loops" / "random_s0" / "state.json").rounds_done == 1
    monkeypatch.setattr(loop_module, "train", real_train)
    point = resume_point(run_dir)
    resumed = run(point.config, run_dir, CPU, resume_from=point.resume_from, progress=False)
    assert untimed(resumed.details.states) == untimed(straight.details.states)


def test_a_keyboard_interrupt_in_selection_keeps_the_finished_rounds(
    tmp_path, monkeypatch, straight
):
    # Outside a round's training the CLI's handler turns a signal into KeyboardInterrupt
    # (tests/test_run_interrupts.py sends real ones): it propagates, every finished round's
    # state.json stays as it was, and the round it cut is redone on resume.
    real_select, calls = loop_module._select, []

    def select_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # entropy's round 0 (its training shared with random's round 0)
            raise KeyboardInterrupt
        return real_select(*args, **kwargs)

    monkeypatch.setattr(loop_module, "_select", select_then_interrupt)
    cfg = tiny_cfg()
    run_dir = run_folder(tmp_path / "run", cfg)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir, CPU, progress=False)
    random_state = LoopState.load(run_dir / "loops" / "random_s0" / "state.json")
    assert random_state.rounds_done == 2  # random's loop finished; entropy's has no state yet
    assert not (run_dir / "loops" / "entropy_s0" / "state.json").exists()
    assert resume_point(run_dir).step == 2
    monkeypatch.setattr(loop_module, "_select", real_select)
    resumed = run(cfg, run_dir, CPU, resume_from=run_dir, progress=False)
    assert untimed(resumed.details.states) == untimed(straight.details.states)
