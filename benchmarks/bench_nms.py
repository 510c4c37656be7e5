"""Time labkit's box_iou, nms and batched_nms against torchvision.ops on CPU.

    python benchmarks/bench_nms.py [--sizes 1000 5000] [--repeats 50] [--threads 1]

Boxes are realistic detector output: jittered copies around a few dozen objects with random
scores, so NMS suppresses most of them. Each time is the median of ``--repeats`` runs after a
warm-up. By default both libraries run on one thread: torchvision's NMS kernel is
single-threaded C++, and on a busy machine a multi-threaded run of small tensor operations
measures the scheduler more than the code. The target is NMS within 1.5x of torchvision at
1,000 boxes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
import torchvision.ops as tv

from labkit.detection.boxes import box_iou
from labkit.detection.nms import batched_nms, nms

TARGET_RATIO = 1.5


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


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    parser.add_argument("--iou-threshold", type=float, default=0.5)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    thr = args.iou_threshold
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), IoU threshold {thr}")
    print(
        f"{'op':<12} {'boxes':>6} {'kept':>5} {'labkit ms':>10} {'torchvision ms':>15} {'ratio':>6}"
    )

    nms_ratio_at_1000 = None
    for n in args.sizes:
        boxes, scores, classes = clustered_boxes(n, torch.Generator().manual_seed(n))
        keep = nms(boxes, scores, thr)
        if not torch.equal(keep, tv.nms(boxes, scores, thr)):
            raise SystemExit(f"nms disagrees with torchvision at {n} boxes")
        batched_keep = batched_nms(boxes, scores, classes, thr)
        if set(batched_keep.tolist()) != set(tv.batched_nms(boxes, scores, classes, thr).tolist()):
            raise SystemExit(f"batched_nms disagrees with torchvision at {n} boxes")
        # (name, boxes kept, labkit call, torchvision call); partial binds this size's tensors.
        cases = [
            (
                "nms",
                len(keep),
                partial(nms, boxes, scores, thr),
                partial(tv.nms, boxes, scores, thr),
            ),
            (
                "batched_nms",
                len(batched_keep),
                partial(batched_nms, boxes, scores, classes, thr),
                partial(tv.batched_nms, boxes, scores, classes, thr),
            ),
            ("box_iou", n, partial(box_iou, boxes, boxes), partial(tv.box_iou, boxes, boxes)),
        ]
        for name, kept, ours, theirs in cases:
            # A 5,000 x 5,000 IoU matrix takes about a second: fewer repeats for it.
            repeats = args.repeats if name != "box_iou" or n <= 2000 else max(5, args.repeats // 10)
            ours_ms, theirs_ms = median_ms(ours, repeats), median_ms(theirs, repeats)
            ratio = ours_ms / theirs_ms
            print(f"{name:<12} {n:>6} {kept:>5} {ours_ms:>10.3f} {theirs_ms:>15.3f} {ratio:>6.2f}")
            if name == "nms" and n == 1000:
                nms_ratio_at_1000 = ratio
    if nms_ratio_at_1000 is not None:
        verdict = "within" if nms_ratio_at_1000 <= TARGET_RATIO else "NOT within"
        print(
            f"nms at 1,000 boxes: {nms_ratio_at_1000:.2f}x torchvision, {verdict} {TARGET_RATIO}x"
        )


if __name__ == "__main__":
    main()
