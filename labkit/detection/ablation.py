"""P10's recipe ablation: the recipe before the speed-ups against each change, at one CPU budget.

    python -m labkit.detection.ablation RECIPE [RECIPE ...] [--steps 780] [--eval-every 195]
                                        [--out runs/ablation/p10.json] [--set KEY=VALUE ...]

Each recipe is ``p10_detection`` with the overrides of :data:`RECIPES`, trained on one CPU
thread for ``--steps`` steps (the learning-rate schedule spans them) and evaluated every
``--eval-every`` steps on the 200 held-out images: mAP@0.5, and precision and recall at the
config's ``eval.report_score``. Each run's row (curve, final numbers, process CPU seconds of
training alone, from ``task.run``'s summary) is merged into the ``--out`` JSON with the command,
commit, torch version and machine load that made it. The notebook
(notebooks/10_detection_tiny.py, "Speed to a good model") runs short ones live with
:func:`ablate` and plots the stored full-budget file, ``labkit/detection/ablation_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import torch

from labkit.detection.task import run
from labkit.utils.config import apply_overrides, load_config

# The recipe before the speed-ups, spelled out: each other recipe changes one thing of it.
BEFORE = ["loss.cls_loss=focal", "loss.focal_alpha=0.25", "optim.lr=0.002", "data.batch_size=8"]
RECIPES: dict[str, list[str]] = {
    "before": BEFORE,
    "quality_focal": [*BEFORE, "loss.cls_loss=quality_focal"],  # Li et al. 2020 (GFL)
    "varifocal": [*BEFORE, "loss.cls_loss=varifocal", "loss.focal_alpha=0.75"],  # Zhang et al. 2021
    "lr_4e-3": [*BEFORE, "optim.lr=0.004"],
    "quality_focal_lr_4e-3": [*BEFORE, "loss.cls_loss=quality_focal", "optim.lr=0.004"],
    "new": [],  # the YAML's defaults: the recipe the lab ships
}
CURVE_KEYS = ("map50", "precision", "recall")


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def ablate(name: str, steps: int, eval_every: int, extra: list[str] = ()) -> dict:
    """Train recipe ``name`` (plus ``extra`` overrides) for ``steps`` steps on the CPU; its
    held-out curve, final numbers and process CPU seconds of training."""
    overrides = [
        *RECIPES[name],
        *extra,
        "device=cpu",
        f"trainer.max_steps={steps}",
        f"trainer.eval_every={eval_every}",
    ]
    cfg = apply_overrides(load_config("p10_detection"), overrides)
    start = time.perf_counter()
    outcome = run(cfg, None, torch.device("cpu"), progress=False)
    summary = outcome.summary
    curve = [
        {"step": row["step"], **{k: round(row[f"eval/{k}"], 4) for k in CURVE_KEYS}}
        for row in outcome.details.eval_history
    ]
    return {
        "overrides": [*RECIPES[name], *extra],
        "steps": steps,
        "report_score": cfg["eval"]["report_score"],
        "train_cpu_seconds": round(summary["cpu/train_seconds"], 1),
        "eval_cpu_seconds": round(summary["cpu/eval_seconds"], 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "curve": curve,
        "final": curve[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, default=780)
    parser.add_argument("--eval-every", type=int, default=195)
    parser.add_argument("--out", type=Path, default=Path("runs/ablation/p10.json"))
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every recipe")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.recipes:
        row = ablate(name, args.steps, args.eval_every, args.set)
        row.update(
            command="OMP_NUM_THREADS=1 python -m labkit.detection.ablation " + name
            + f" --steps {args.steps} --eval-every {args.eval_every}"
            + (" --set " + " ".join(args.set) if args.set else ""),
            commit=commit(), torch=torch.__version__, load=round(os.getloadavg()[0], 1),
        )  # fmt: skip
        f = row["final"]
        print(
            f"{name}: {row['steps']} steps, {row['train_cpu_seconds']:.0f} CPU-s of training: "
            f"mAP@0.5 {f['map50']:.3f}, precision {f['precision']:.3f}, recall {f['recall']:.3f} "
            f"at score {row['report_score']}",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        stored = json.loads(args.out.read_text()) if args.out.exists() else {}
        stored[name] = row
        args.out.write_text(json.dumps(stored, indent=1))


if __name__ == "__main__":
    main()
