"""P20's recipe ablation: the recipe before the speed-ups against each change, at one budget.

    python -m labkit.diffusion.ablation RECIPE [RECIPE ...] [--steps 800] [--eval-every 200]
                                        [--out runs/ablation/p20.json]

Each recipe is ``p20_ddpm`` with the overrides of :data:`RECIPES`, trained on one CPU thread for
``--steps`` steps (the learning-rate schedule spans them), evaluated every ``--eval-every`` steps
by the run's own evaluation (DDIM, the judge's confident share, label accuracy, Fréchet
distance). Each run's row (curve, final numbers, process CPU seconds of training alone) is
merged into the ``--out`` JSON with the command, commit, torch version and machine load that
made it. The notebook (notebooks/20_diffusion_mini.py) plots the stored file.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from labkit.diffusion.task import run
from labkit.utils.ablation import ablation_main, budget_overrides, recipe_row
from labkit.utils.config import apply_overrides, load_config

# The recipe before the speed-ups, spelled out: each other recipe changes one thing of it.
BEFORE = [
    "loss.weighting=uniform",
    "diffusion.prediction=eps",
    "optim.lr=0.002",
    "optim.warmup_steps=100",
    "data.batch_size=64",
]
RECIPES: dict[str, list[str]] = {
    "before": BEFORE,
    "min_snr": [*BEFORE, "loss.weighting=min_snr"],
    "v": [*BEFORE, "diffusion.prediction=v"],
    "v_min_snr": [*BEFORE, "diffusion.prediction=v", "loss.weighting=min_snr"],
    "lr_4e-3": [*BEFORE, "optim.lr=0.004"],
    "batch_32": [*BEFORE, "data.batch_size=32"],
    "new": [],  # the YAML's defaults: the recipe the lab ships
}
CURVE_KEYS = ("confident_share", "label_accuracy", "frechet", "digits_present", "val_loss")


def ablate(
    name: str, steps: int, eval_every: int, extra: list[str], runs_dir: Path | None = None
) -> dict:
    """Train recipe ``name`` for ``steps`` steps on the CPU; its curve and CPU seconds. The run
    folder (with the last checkpoint) is kept under ``runs_dir`` when given."""
    overrides = [
        *RECIPES[name],
        *extra,
        *budget_overrides(steps, eval_every),
        f"trainer.ckpt_every={steps}",
        "eval.log_images=0",
    ]
    cfg = apply_overrides(load_config("p20_ddpm"), overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"p20_ablation_{name}_") as tmp:
        run_dir = runs_dir / name if runs_dir is not None else Path(tmp)
        outcome = run(cfg, run_dir, torch.device("cpu"), progress=False)
    return recipe_row(
        outcome, overrides=RECIPES[name] + extra, steps=steps,
        wall_seconds=time.perf_counter() - start, curve_keys=CURVE_KEYS,
    )  # fmt: skip


def describe(final: dict) -> str:
    """One recipe's final numbers, as the command line prints them."""
    return (
        f"confident {final['confident_share']:.2f}, labels {final['label_accuracy']:.2f}, "
        f"Fréchet {final['frechet']:.0f}"
    )


def main(argv: list[str] | None = None) -> None:
    doc = __doc__.splitlines()[0]
    ablation_main(
        "labkit.diffusion.ablation", RECIPES, ablate, describe,
        steps=800, eval_every=200, out="runs/ablation/p20.json", description=doc, argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    main()
