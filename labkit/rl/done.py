"""P30's "done when" checks (``python -m labkit.done p30``): DQN and REINFORCE with baseline each
solve CartPole-v1 in at least 2 of 3 seeds, within the budget of their shipped config.

Each check trains with :func:`labkit.rl.task.run_seeds`, one CPU thread per run.
"""

from __future__ import annotations

import time

from labkit.rl.task import run_seeds
from labkit.utils.checks import Check
from labkit.utils.config import load_config

DONE_SEEDS = (1, 2, 3)
THRESHOLD = 475.0  # CartPole-v1's "solved": mean return over 100 greedy evaluation episodes


def _check_solves(config: str, label: str, budget: str, seeds=DONE_SEEDS, need: int = 2) -> Check:
    start = time.perf_counter()
    # One thread: a 2-layer MLP on 4 numbers is faster without intra-op threading.
    summaries = run_seeds(config, seeds, ["torch_threads=1"])
    solved = [s for s in summaries if s["solved"]]
    per_seed = [
        (
            f"seed {s['seed']}: {s['env_steps']:,} env steps / {s['episodes']} episodes / "
            f"{s['wall_time_s']:.0f} s"
            if s["solved"]
            else f"seed {s['seed']}: not solved in {s['env_steps']:,} env steps"
        )
        + f" (100-ep mean {s['final_eval_mean_return']:.0f})"
        for s in summaries
    ]
    measured = f"{len(solved)}/{len(seeds)} solved; " + "; ".join(per_seed)
    target = f">= {THRESHOLD:.0f} in >= {need}/{len(seeds)} seeds, {budget}"
    return Check(label, target, measured, len(solved) >= need, time.perf_counter() - start)


def check_p30_dqn() -> Check:
    """(a) DQN solves CartPole-v1 (>= 475 over 100 greedy episodes) in >= 2 of 3 seeds."""
    budget = load_config("p30_dqn")["trainer"]["max_env_steps"]
    return _check_solves("p30_dqn", "DQN solves CartPole-v1", f"<= {budget:,} env steps")


def check_p30_pg() -> Check:
    """(b) REINFORCE with baseline solves CartPole-v1 in >= 2 of 3 seeds."""
    budget = load_config("p30_pg")["trainer"]["max_episodes"]
    return _check_solves("p30_pg", "REINFORCE+baseline solves CartPole-v1", f"<= {budget} episodes")


DONE_CHECKS = [check_p30_dqn, check_p30_pg]
