"""Time labkit's box_iou, nms and batched_nms against torchvision.ops on CPU.

    python benchmarks/bench_nms.py [--sizes 1000 5000] [--rounds 11] [--block-ms 40]
                                   [--threads 1] [--clock wall|cpu]

Boxes are realistic detector output: jittered copies around a few dozen objects with random
scores, so NMS suppresses most of them. Before timing, labkit's answers are checked to be
identical to torchvision's.

Timing is interleaved so that one run is enough: each of ``--rounds`` rounds times a block of
labkit calls and a block of torchvision calls (AB, then BA in the next round, ...), each block
about ``--block-ms`` long. A side's time per call is the median over rounds, and the ratio is
the ratio of the two medians; a change of machine load during the run hits both sides alike.
The last column, the range of the per-round ratios, says how noisy the machine was. By default
both libraries run on one thread: torchvision's NMS kernel is single-threaded C++, and on a busy
machine a multi-threaded run of small tensor operations measures the scheduler more than the
code. ``--clock cpu`` times with the thread's CPU time instead of the wall clock, which ignores
the time other processes hold the core (not what they do to its caches).

The target is nms and batched_nms at most as slow as torchvision at 1,000 boxes (ratio <= 1.0):
the last lines say PASS or FAIL for each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torchvision.ops as tv

from labkit.detection.boxes import box_iou
from labkit.detection.nms import batched_nms, nms

TARGET_RATIO = 1.0
TARGET_BOXES = 1000
TARGET_OPS = ("nms", "batched_nms")


def clustered_boxes(n: int, generator: torch.Generator, num_objects: int = 40, size: float = 512.0):
    """``[n, 4]`` xyxy boxes around ``num_objects`` objects, ``[n]`` scores, ``[n]`` classes."""
    centers = torch.rand(num_objects, 2, generator=generator) * size
    sizes = torch.rand(num_objects, 2, generator=generator) * 60 + 20
    which = torch.randint(0, num_objects, (n,), generator=generator)
    c = centers[which] + torch.randn(n, 2, generator=generator) * 6
    wh = sizes[which] * (1 + 0.1 * torch.randn(n, 2, generator=generator))
    boxes = torch.cat([c - wh / 2, c + wh / 2], dim=1)
    scores = torch.rand(n, generator=generator)
    classes = which % 5  # each object has one class, as a detector's output would
    return boxes, scores, classes


def time_block(fn: Callable[[], object], calls: int, clock: Callable[[], float]) -> float:
    """Seconds per call of ``fn``, over ``calls`` consecutive calls."""
    start = clock()
    for _ in range(calls):
        fn()
    return (clock() - start) / calls


def interleaved_medians(
    ours: Callable[[], object],
    theirs: Callable[[], object],
    rounds: int,
    block_s: float,
    clock: Callable[[], float],
) -> tuple[float, float, list[float]]:
    """Median seconds per call of each side over interleaved rounds, and each round's ratio."""
    # Warm up (first-call allocations, caches), then size each side's block to about block_s.
    calls = []
    for fn in (ours, theirs):
        fn()
        once = time_block(fn, 1, clock)
        calls.append(max(1, round(block_s / max(once, 1e-9))))
    ours_times, theirs_times = [], []
    for round_ in range(rounds):
        if round_ % 2 == 0:  # AB, BA, AB, ...: neither side always runs right after the other
            ours_times.append(time_block(ours, calls[0], clock))
            theirs_times.append(time_block(theirs, calls[1], clock))
        else:
            theirs_times.append(time_block(theirs, calls[1], clock))
            ours_times.append(time_block(ours, calls[0], clock))
    per_round = [a / b for a, b in zip(ours_times, theirs_times)]
    return statistics.median(ours_times), statistics.median(theirs_times), per_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rounds", type=int, default=11, help="interleaved rounds per case")
    parser.add_argument("--block-ms", type=float, default=40.0, help="length of a timed block")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--iou-threshold", type=float, default=0.5)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    thr, block_s = args.iou_threshold, args.block_ms / 1e3
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), IoU threshold {thr}, "
        f"{args.clock} clock, median of {args.rounds} interleaved rounds, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'op':<12} {'boxes':>6} {'kept':>5} {'labkit ms':>10} {'torchvision ms':>15} "
        f"{'ratio':>6} {'per-round ratios':>17}"
    )

    ratios = {}  # (op, boxes) -> ratio of medians
    for n in args.sizes:
        boxes, scores, classes = clustered_boxes(n, torch.Generator().manual_seed(n))
        # (name, labkit call, torchvision call); partial binds this size's tensors.
        cases = [
            ("nms", partial(nms, boxes, scores, thr), partial(tv.nms, boxes, scores, thr)),
            (
                "batched_nms",
                partial(batched_nms, boxes, scores, classes, thr),
                partial(tv.batched_nms, boxes, scores, classes, thr),
            ),
            ("box_iou", partial(box_iou, boxes, boxes), partial(tv.box_iou, boxes, boxes)),
        ]
        for name, ours, theirs in cases:
            answer = ours()
            if not torch.equal(answer, theirs()):
                raise SystemExit(f"{name} disagrees with torchvision at {n} boxes")
            ours_s, theirs_s, per_round = interleaved_medians(
                ours, theirs, args.rounds, block_s, clock
            )
            ratio = ratios[name, n] = ours_s / theirs_s
            spread = f"{min(per_round):.2f}-{max(per_round):.2f}"
            print(
                f"{name:<12} {n:>6} {len(answer):>5} {ours_s * 1e3:>10.3f} {theirs_s * 1e3:>15.3f} "
                f"{ratio:>6.2f} {spread:>17}"
            )
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} at the end")
    if args.clock == "wall" and load > (os.cpu_count() or 1):
        print(
            f"(a busy machine: load {load:.1f} on {os.cpu_count()} cores; ratios are noisy, "
            "--clock cpu is steadier)"
        )
    for name in TARGET_OPS:
        if (name, TARGET_BOXES) not in ratios:
            print(f"{name} at {TARGET_BOXES:,} boxes: not measured (add {TARGET_BOXES} to --sizes)")
            continue
        ratio = ratios[name, TARGET_BOXES]
        verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
        print(
            f"{verdict} {name} at {TARGET_BOXES:,} boxes: {ratio:.2f}x torchvision "
            f"(target <= {TARGET_RATIO}x)"
        )


if __name__ == "__main__":
    main()
