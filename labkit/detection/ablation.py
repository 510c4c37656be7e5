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

import time
from pathlib import Path

import torch

from labkit.detection.task import run
from labkit.utils.ablation import ablation_main, budget_overrides, recipe_row
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


def ablate(
    name: str, steps: int, eval_every: int, extra: list[str] = (), runs_dir: Path | None = None
) -> dict:
    """Train recipe ``name`` (plus ``extra`` overrides) for ``steps`` steps on the CPU; its
    held-out curve, final numbers and process CPU seconds of training. The run folder is kept
    under ``runs_dir`` when given (else nothing is written)."""
    cfg = apply_overrides(
        load_config("p10_detection"), [*RECIPES[name], *extra, *budget_overrides(steps, eval_every)]
    )
    start = time.perf_counter()
    run_dir = runs_dir / name if runs_dir is not None else None
    outcome = run(cfg, run_dir, torch.device("cpu"), progress=False)
    return recipe_row(
        outcome, overrides=[*RECIPES[name], *extra], steps=steps,
        wall_seconds=time.perf_counter() - start, curve_keys=CURVE_KEYS, digits=4,
        report_score=cfg["eval"]["report_score"],
    )  # fmt: skip


def describe(final: dict) -> str:
    """One recipe's final numbers, as the command line prints them."""
    return (
        f"mAP@0.5 {final['map50']:.3f}, precision {final['precision']:.3f}, "
        f"recall {final['recall']:.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    doc = __doc__.splitlines()[0]
    ablation_main(
        "labkit.detection.ablation", RECIPES, ablate, describe,
        steps=780, eval_every=195, out="runs/ablation/p10.json", description=doc, argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    main()
