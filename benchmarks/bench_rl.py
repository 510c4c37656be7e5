"""Solve CartPole-v1 with DQN and REINFORCE-with-baseline for several seeds; print a table.

    python benchmarks/bench_rl.py                       # both algorithms, seeds 1 2 3
    python benchmarks/bench_rl.py --algo dqn --seeds 1 2 3 4 5 --set optim.lr=0.0005

"Solved" = greedy policy, mean return >= 475 over 100 evaluation episodes. Targets (phase 30):
DQN within 50k env steps, REINFORCE-with-baseline within 500 episodes, >= 2 of 3 seeds.
``--set key=value ...`` overrides the config of the chosen algorithm (values parsed as YAML).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from labkit.rl.task import run_seeds


def run(algo: str, seeds: list[int], overrides: list[str]) -> list[dict]:
    rows = []
    for seed in seeds:
        summary = run_seeds(f"p30_{algo}", [seed], overrides)[0]
        rows.append({"algo": algo, "seed": seed, **summary})
        print_row(rows[-1], flush=True)
    return rows


def print_header() -> None:
    print(f"{'algo':<5}{'seed':>5}{'solved':>8}{'env_steps':>11}{'episodes':>10}"
          f"{'updates':>9}{'wall_s':>8}{'eval_100':>10}", flush=True)  # fmt: skip


def print_row(row: dict, flush: bool = False) -> None:
    print(
        f"{row['algo']:<5}{row['seed']:>5}{str(row['solved']):>8}{row['env_steps']:>11}"
        f"{row['episodes']:>10}{row['updates']:>9}{row['wall_time_s']:>8.1f}"
        f"{row['final_eval_mean_return']:>10.1f}",
        flush=flush,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algo", choices=["dqn", "pg", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--set", dest="overrides", nargs="*", default=[], help="e.g. dqn.batch_size=64"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    algos = ["dqn", "pg"] if args.algo == "both" else [args.algo]
    print_header()
    for algo in algos:
        rows = run(algo, args.seeds, args.overrides)
        solved = [r for r in rows if r["solved"]]
        steps = [r["env_steps"] for r in solved]
        episodes = [r["episodes"] for r in solved]
        print(
            f"{algo}: solved {len(solved)}/{len(rows)} seeds"
            + (
                f"; median to solve {statistics.median(steps):.0f} env steps, "
                f"{statistics.median(episodes):.0f} episodes, "
                f"{statistics.median(r['wall_time_s'] for r in solved):.0f} s"
                if solved
                else ""
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
