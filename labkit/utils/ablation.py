"""The command line both recipe ablations share (``python -m labkit.<phase>.ablation``).

A phase's ablation module names its recipes (config overrides) and how to train one
(``ablate(name, steps, eval_every, extra, runs_dir) -> row``); this runs the recipes asked for, one after
the other, stamps each row with the command, commit, torch version and machine load that made
it, prints one line a recipe and merges the rows into a JSON file (earlier rows of other recipes
are kept: a file can be filled over several calls).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from labkit.utils.runs import git_commit, uncommitted_files


def ablation_main(
    module: str,
    recipes: dict[str, list[str]],
    ablate: Callable[..., dict],
    describe: Callable[[dict], str],
    *,
    steps: int,
    eval_every: int,
    out: str,
    description: str,
    argv: list[str] | None = None,
) -> None:
    """Parse ``RECIPE [RECIPE ...] [--steps] [--eval-every] [--out] [--set KEY=VALUE ...]``, train
    each recipe with ``ablate(name, steps, eval_every, extra_overrides, runs_dir)`` on one CPU thread and
    store its row under its name in ``--out``. ``describe(row["final"])`` is the printed summary."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("recipes", nargs="+", choices=sorted(recipes))
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--eval-every", type=int, default=eval_every)
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every recipe")
    parser.add_argument("--runs-dir", type=Path, help="keep each run folder here (else none kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.recipes:
        row = ablate(name, args.steps, args.eval_every, args.set, args.runs_dir)
        row.update(
            command=f"OMP_NUM_THREADS=1 python -m {module} {name} --steps {args.steps} "
            f"--eval-every {args.eval_every}" + (" --set " + " ".join(args.set) if args.set else ""),
            commit=git_commit(), uncommitted=uncommitted_files(), torch=torch.__version__,
            load=round(os.getloadavg()[0], 1),
        )  # fmt: skip
        print(
            f"{name}: {row['steps']} steps, {row['train_cpu_seconds']:.0f} CPU-s of training: "
            f"{describe(row['final'])}",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        stored = json.loads(args.out.read_text()) if args.out.exists() else {}
        stored[name] = row
        args.out.write_text(json.dumps(stored, indent=1))


def budget_overrides(steps: int, eval_every: int) -> list[str]:
    """The overrides every recipe of an ablation trains with: the CPU, ``steps`` steps (the
    schedule spans them), an evaluation every ``eval_every``."""
    return ["device=cpu", f"trainer.max_steps={steps}", f"trainer.eval_every={eval_every}"]


def recipe_row(
    outcome: Any,
    *,
    overrides: list[str],
    steps: int,
    wall_seconds: float,
    curve_keys: tuple[str, ...],
    digits: int | None = None,
    **fields: Any,
) -> dict:
    """One recipe's stored row from its run's outcome (a phase ``run``'s result: ``summary`` with
    ``cpu/train_seconds`` and ``cpu/eval_seconds``, ``details.eval_history``): its held-out curve
    (the ``eval/<key>`` of ``curve_keys`` a row has, rounded to ``digits`` when given), final
    numbers, CPU and wall seconds, plus ``fields``."""
    curve = [
        {
            "step": row["step"],
            **{
                key: row[f"eval/{key}"] if digits is None else round(row[f"eval/{key}"], digits)
                for key in curve_keys
                if f"eval/{key}" in row
            },
        }
        for row in outcome.details.eval_history
    ]
    return {
        "overrides": overrides,
        "steps": steps,
        **fields,
        "train_cpu_seconds": round(outcome.summary["cpu/train_seconds"], 1),
        "eval_cpu_seconds": round(outcome.summary["cpu/eval_seconds"], 1),
        "wall_seconds": round(wall_seconds, 1),
        "curve": curve,
        "final": curve[-1],
    }
