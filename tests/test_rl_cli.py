"""P30's entry points as a user runs them: ``python -m labkit.train p30_dqn|p30_pg``, a subprocess.

Each run is a few hundred env steps with evaluation off, so the cost is mostly the import.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.rl.task import FAILURE_MODES, run_seeds
from labkit.utils.config import apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[1]
DQN_FEW_STEPS = ["trainer.max_env_steps=300", "dqn.learning_starts=100", "dqn.hidden=[32,32]",
                 "trainer.eval_every=0", "eval.solve_episodes=5"]  # fmt: skip
PG_FEW_EPISODES = ["trainer.max_episodes=4", "pg.hidden=[16]", "trainer.eval_every=0",
                   "eval.solve_episodes=5"]  # fmt: skip


def train_cli(config: str, *overrides: str, options: tuple = ()) -> subprocess.CompletedProcess:
    """``python -m labkit.train CONFIG OVERRIDES... OPTIONS...`` on one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a small shared CPU
    return subprocess.run(
        [sys.executable, "-m", "labkit.train", config, *overrides, "torch_threads=1", *options],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def summary_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # the CLI's last line is JSON


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory) -> dict:
    runs = tmp_path_factory.mktemp("runs")
    return summary_of(train_cli("p30_dqn", *DQN_FEW_STEPS, options=("--runs-dir", str(runs))))


def test_cli_dqn_writes_a_complete_run_folder(dqn_run):
    run_dir = Path(dqn_run["run_dir"])
    assert run_dir.name.endswith("_dqn_s1") and run_dir.parent.name == "p30_dqn"
    assert dqn_run["env_steps"] == 300 and dqn_run["updates"] == 128  # one burst, at step 256
    for name in ("config.yaml", "env.json", "metrics.jsonl", "checkpoints/step_00000300.pt"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))


def test_cli_resume_from_a_run_folder_continues(dqn_run):
    run_dir = Path(dqn_run["run_dir"])
    resumed = summary_of(
        train_cli("p30_dqn", "trainer.max_env_steps=600", options=("--resume", str(run_dir)))
    )
    assert resumed["run_dir"] == str(run_dir)  # the same folder, not a new run
    assert resumed["env_steps"] == 600 and resumed["updates"] == 128 + 128  # steps 256 and 512
    assert (run_dir / "checkpoints" / "step_00000600.pt").is_file()
    assert (run_dir / "config.resume300.yaml").is_file()  # what the continuation ran with
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert max(steps) == 600 and min(steps) < 300  # one metrics file across both parts


def test_cli_pg_smoke(tmp_path):
    summary = summary_of(
        train_cli("p30_pg", *PG_FEW_EPISODES, options=("--runs-dir", str(tmp_path)))
    )
    assert summary["episodes"] == 4 and summary["updates"] == 4
    assert 0 < summary["final_eval_mean_return"] <= 500


def test_cli_bad_override_is_a_one_paragraph_error(tmp_path):
    result = train_cli("p30_dqn", "optim.lrr=0.1", options=("--runs-dir", str(tmp_path)))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Did you mean 'optim.lr'?" in error[0]
    assert not list(tmp_path.iterdir())  # nothing written for a run that never started


def test_every_failure_mode_is_a_valid_override_of_its_config():
    for name, mode in FAILURE_MODES.items():
        cfg = apply_overrides(load_config(mode.config), list(mode.overrides))  # raises on typos
        assert cfg != load_config(mode.config), name


def test_run_seeds_runs_each_seed_with_its_own_settings():
    cfg = apply_overrides(load_config("p30_pg"), ["torch_threads=1", *PG_FEW_EPISODES])
    summaries = run_seeds(cfg, [3, 4], ["pg.baseline=mean"])
    assert [s["seed"] for s in summaries] == [3, 4]
    assert summaries[0]["overrides"] == ["pg.baseline=mean"]
    assert summaries[0]["env_steps"] != summaries[1]["env_steps"]  # different episodes per seed
