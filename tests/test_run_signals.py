"""Phases with loops of their own (RL, splatting) at parity with the supervised trainer: Ctrl-C /
SIGTERM finish the iteration, save and exit 130; a non-finite loss stops the run with the step
named and no checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit.train import main
from labkit.utils.checkpoint import list_checkpoints, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


LONG_RUNS = {  # config -> overrides that make a run last until it is stopped
    "p30_dqn": ["trainer.max_env_steps=1000000"],
    "p30_pg": ["trainer.max_episodes=100000"],
    "p50_splat2d": ["trainer.max_steps=1000000", "data.size=32", "model.num_gaussians=50",
                    "trainer.log_every=1"],
}  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
@pytest.mark.parametrize("config", sorted(LONG_RUNS))
def test_own_loop_run_saves_and_exits_130_on_a_signal(tmp_path, sig, config):
    # Phases with loops of their own (P30's RL loops, P50's fits), at parity with the trainer.
    cmd = [sys.executable, "-m", "labkit.train", config, *LONG_RUNS[config],
           "trainer.eval_every=0", "torch_threads=1", "--runs-dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.time() + 60
    while not list(tmp_path.rglob("metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.2)  # the loop has started once it logs
    time.sleep(1.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped_by"] == sig.name
    (run_dir,) = tmp_path.glob("*/*")
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    assert checkpoints and read_checkpoint(checkpoints[-1])["step"] == summary["step"] > 0
    assert json.loads((run_dir / "status.json").read_text())["status"] == "stopped"


def test_rl_non_finite_loss_stops_with_the_step_and_no_checkpoint(tmp_path, capsys):
    code = main([
        "p30_dqn", "dqn.reward_scale=1e38", "trainer.max_env_steps=3000", "trainer.eval_every=0",
        "trainer.ckpt_every=1", "dqn.learning_starts=200", "torch_threads=1",
        "--runs-dir", str(tmp_path),
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "at step" in err
    for folder in tmp_path.rglob("checkpoints"):
        for path in list_checkpoints(folder):
            model = read_checkpoint(path)["model"]
            assert all(v.isfinite().all() for v in model.values())
