"""DDPM (all steps) against DDIM (few steps) on one trained P20 checkpoint: quality and time.

    python -m benchmarks.compare_samplers RUN_OR_CHECKPOINT [--samples 200]
                                          [--samplers ddpm ddim:50 ddim:20 ddim:10 ddim:50:1.0]

For each sampler, the checkpoint's EMA weights draw ``--samples`` digits from the same seed
(classes 0-9 in turn, the run's guidance scale) and the P00 judge scores them as the run's
own evaluation does (``labkit.diffusion.trained.evaluate_checkpoint``): confident share, class
entropy, digits present, Fréchet distance to held-out digits, and the sampling time. The target:
DDIM with 50 steps within 5 points of DDPM's confident share, at 1/20 of its time. Results are
printed as a table and saved as JSON next to the checkpoint (``samplers.json``); ``ddim:S:E``
is DDIM with S steps and η = E (η = 1: as much fresh noise per step as DDPM). ``sample.eta``'s
default in p20_ddpm.yaml is the smallest η measured here within 1 point of DDPM's confident share
(``--samplers ddpm ddim:50 ddim:50:0.25 ddim:50:0.5 ddim:50:0.75 ddim:50:1.0``; the YAML states
the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from labkit.diffusion.trained import evaluate_checkpoint
from labkit.utils.checkpoint import open_checkpoint


def parse_sampler(text: str) -> dict:
    """``"ddpm"``, ``"ddim:50"`` (η = 0) or ``"ddim:50:1.0"`` (η = 1) → the ``sample.*`` changes."""
    name, _, rest = text.partition(":")
    steps, _, eta = rest.partition(":")
    if name == "ddpm" and not rest:
        return {"sampler": "ddpm"}
    try:
        if name == "ddim" and int(steps) > 0 and 0.0 <= float(eta or 0.0) <= 1.0:
            return {"sampler": "ddim", "steps": int(steps), "eta": float(eta or 0.0)}
    except ValueError:
        pass
    raise SystemExit(f"--samplers: expected 'ddpm', 'ddim:STEPS' or 'ddim:STEPS:ETA', got {text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a P20 run folder (its newest checkpoint) or a .pt file")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--samplers", nargs="+", default=["ddpm", "ddim:50", "ddim:20", "ddim:10"])
    args = parser.parse_args()
    ckpt = open_checkpoint(args.checkpoint)
    print(
        f"{ckpt.path} (step {ckpt.step}), {args.samples} samples, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}"
    )
    rows = []
    for text in args.samplers:
        changes = parse_sampler(text)
        start = time.perf_counter()
        scores = evaluate_checkpoint(ckpt, num_samples=args.samples, **changes)
        rows.append({"sampler": text, **scores, "total_seconds": time.perf_counter() - start})
        r = rows[-1]
        print(
            f"{text:<8} confident {r['confident_share']:.3f}  entropy {r['class_entropy']:.3f}  "
            f"digits {r['digits_present']:.0f}  frechet {r['frechet']:.1f}  "
            f"sampling {r['sample_seconds']:.1f} s",
            flush=True,
        )
    base = next((r for r in rows if r["sampler"] == "ddpm"), None)
    if base is not None:
        for r in rows:
            if r is not base:
                print(
                    f"{r['sampler']}: {100 * (r['confident_share'] - base['confident_share']):+.1f} "
                    f"points vs ddpm, {r['sample_seconds'] / base['sample_seconds']:.3f} of its time"
                )
    out = Path(ckpt.path).parent / "samplers.json"
    out.write_text(json.dumps({"checkpoint": str(ckpt.path), "step": ckpt.step, "rows": rows}))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
