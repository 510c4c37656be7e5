"""P30's task: DQN and REINFORCE with baseline on CartPole-v1, over seeds, working and broken.

``run(cfg, run_dir, device)`` seeds and trains one config (its ``algo`` picks the loop in
``labkit.rl.loops``; the loop builds its own envs and networks, so there is no separate
``build``); ``run_seeds`` repeats a config over seeds; ``run_failure_mode`` trains a named broken
variant (:data:`FAILURE_MODES`, each a one-line config override) next to the working config and
returns both sets of learning curves. The CLI (``python -m labkit.train p30_dqn``),
notebooks/30_rl_basics.py and ``python -m labkit.done p30`` (``labkit.rl.done``) call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labkit.rl.config import with_defaults
from labkit.rl.loops import BUILDS, LOOPS, DQNSetup, PGSetup
from labkit.utils.checkpoint import Checkpoint
from labkit.utils.config import ConfigError, apply_overrides, load_config
from labkit.utils.device import get_device
from labkit.utils.runs import RunResult, checkpoint_resume_point, write_run_files
from labkit.utils.seed import set_seed
from labkit.utils.threads import torch_threads

BUDGET_KEYS = {"dqn": "trainer.max_env_steps", "pg": "trainer.max_episodes"}  # one per loop
X_AXES = {"dqn": "env_steps", "pg": "episodes"}  # what each loop's budget counts
SUMMARY_KEYS = ("env_steps", "episodes", "updates", "wall_time_s", "solved")
SUMMARY_KEYS += ("solved_at_env_step", "final_eval_mean_return")


def check(cfg: dict) -> dict:
    """``cfg`` laid over the shipped p30_<algo>.yaml and checked against the algorithm's schema
    (``labkit.rl.config``); ``ConfigError`` names a bad key or value. The CLI calls it first."""
    return with_defaults(cfg)


def build(cfg: dict, device: torch.device) -> DQNSetup | PGSetup:
    """Envs, networks, optimizer and generator of a checked config, for the loop its ``algo``
    names (``labkit.rl.loops.build_dqn`` / ``build_pg``; call ``set_seed`` first)."""
    return BUILDS[cfg["algo"]](cfg, device)


def run(
    cfg: dict,
    run_dir: str | Path | None = None,
    device: torch.device | None = None,
    *,
    resume_from: str | Path | Checkpoint | None = None,
    init_from: str | Path | Checkpoint | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> RunResult:
    """Check, seed and train ``cfg`` with the loop its ``algo`` names (``dqn`` or ``pg``).

    Args:
        cfg: may be partial (see :func:`check`).
        resume_from: a checkpoint of the same loop (file, run folder or :class:`Checkpoint`):
            the run continues exactly. ``init_from``: one whose network starts a new run.
        stop_after: end as if interrupted (checkpoint, final evaluation) once the loop's budget
            counter reaches it: env steps for DQN, episodes for PG, the units of
            ``trainer.max_env_steps`` / ``trainer.max_episodes``. Used to check exact resume.

    Returns:
        ``summary`` (the headline numbers, with ``step`` = env steps and ``stopped_by``) and
        ``details`` (the loop's full summary: ``eval_history``, ``metrics``; see
        :func:`labkit.rl.loops.train_dqn`) and ``setup`` (the trained networks, see :func:`build`).
    """
    cfg = check(cfg)
    device = device or get_device(cfg["device"])
    set_seed(cfg["seed"], deterministic=cfg["deterministic"])
    with torch_threads(cfg["torch_threads"]):
        setup = build(cfg, device)
        details = LOOPS[cfg["algo"]](
            cfg, run_dir, device, resume_from=resume_from, init_from=init_from,
            progress=progress, stop_after=stop_after, setup=setup,
        )  # fmt: skip
    summary = {
        "step": details["env_steps"],
        "stopped_by": details["stopped_by"],
        **{key: details[key] for key in SUMMARY_KEYS},
    }
    return RunResult(summary, details, setup)


# Both loops checkpoint to checkpoints/step_<env steps>.pt and log metrics at env steps.
resume_point = checkpoint_resume_point


# ---------------------------------------------------------------------------------------------
# Several seeds


def run_seeds(
    cfg: dict | str,
    seeds: Sequence[int],
    overrides: Sequence[str] = (),
    *,
    run_root: str | Path | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Train one config once per seed; RL results vary so much by seed that one run says little.

    Args:
        cfg: a config dict or a config name (``"p30_dqn"``).
        seeds: e.g. ``[1, 2, 3]``; each run is otherwise identical.
        overrides: ``key=value`` strings applied before the seed (e.g. a failure mode).
        run_root: if given, run ``i`` writes its folder ``run_root/s<seed>``.

    Returns:
        The trainers' summaries in seed order, each with ``seed`` and ``overrides`` added.
    """
    base = apply_overrides(_as_config(cfg), list(overrides))
    summaries = []
    for seed in seeds:
        run_dir = None if run_root is None else Path(run_root) / f"s{seed}"
        seeded = apply_overrides(base, [f"seed={seed}"])
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_run_files(run_dir, seeded, torch.device(seeded["device"]))
        details = run(seeded, run_dir, progress=progress).details
        summaries.append({"seed": seed, "overrides": list(overrides), **details})
    return summaries


def eval_curves(
    summaries: list[dict], x: str = "env_steps", points: int = 60
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy-evaluation curves of several runs on one shared x grid, ready for mean ± band plots.

    Each run's curve is a step function: at grid point x it is the latest evaluation at or
    before x (NaN before its first). After a run ends it keeps its last value: a run that
    stopped because it was solved keeps its final policy, and so its return. The grid spans
    the earliest first evaluation to the latest last one.

    Args:
        summaries: trainer summaries (with ``eval_history``).
        x: ``"env_steps"`` or ``"episodes"``.

    Returns:
        ``grid`` [G] and ``returns`` [S, G] (S = len(summaries), G = ``points``).
    """
    histories = [s["eval_history"] for s in summaries]
    start = min(history[0][x] for history in histories)
    end = max(history[-1][x] for history in histories)
    grid = np.linspace(start, end, points)  # [G]
    returns = np.full((len(histories), points), np.nan)  # [S, G]
    for i, history in enumerate(histories):
        xs = np.array([record[x] for record in history])  # [K] ascending
        ys = np.array([record["mean_return"] for record in history])  # [K]
        latest = np.searchsorted(xs, grid, side="right") - 1  # [G] index of the latest eval
        returns[i] = np.where(latest >= 0, ys[np.maximum(latest, 0)], np.nan)
    return grid, returns


# ---------------------------------------------------------------------------------------------
# Failure modes: each a one-line override of a working config


@dataclass(frozen=True)
class FailureMode:
    config: str  # the working config it breaks
    overrides: tuple[str, ...]  # the one-line change
    what: str  # what the change does
    why: str  # why it hurts


FAILURE_MODES: dict[str, FailureMode] = {
    "dqn_no_target_network": FailureMode(
        "p30_dqn",
        ("dqn.target_network=false",),
        "bootstrap y = r + γ max Q(s', ·; θ) from the network being trained",
        "every update moves its own target: the deadly triad (function approximation, "
        "bootstrapping, off-policy data) without the brake; Q values chase themselves",
    ),
    "dqn_no_replay": FailureMode(
        "p30_dqn",
        ("dqn.buffer_size=64",),
        "a 64-transition buffer (= batch size): each update sees only the newest transitions",
        "consecutive transitions are strongly correlated and the network forgets earlier "
        "states; 128 updates in a row on the same 64 rows overfit them",
    ),
    "dqn_rewards_x100": FailureMode(
        "p30_dqn",
        ("dqn.reward_scale=100",),
        "rewards ×100, so returns and Q values of order 10⁴",
        "Huber loss clips the gradient at |TD error| > 1, so Q must climb 100× further with "
        "the same step size; targets and learning rate no longer match the scale",
    ),
    "dqn_little_exploration": FailureMode(
        "p30_dqn",
        ("dqn.epsilon_start=0.05", "dqn.exploration_steps=0"),
        "ε = 0.05 from the first step instead of annealing from 1.0",
        "the untrained network's argmax picks the data: the buffer fills with one-sided "
        "failures and the agent rarely sees the states good actions lead to",
    ),
    "pg_no_baseline": FailureMode(
        "p30_pg",
        ("pg.baseline=none", "pg.normalize_advantages=false"),
        "plain REINFORCE: weight log π(a_t|s_t) by the raw return G_t",
        "all G_t > 0 on CartPole, so every action taken is pushed up, good or bad; only the "
        "difference in size tells them apart: an unbiased but very noisy gradient",
    ),
    "pg_rewards_x100": FailureMode(
        "p30_pg",
        ("pg.reward_scale=100", "pg.normalize_advantages=false"),
        "rewards ×100 with the value baseline but no advantage normalisation",
        "advantages and the value loss are 100× (10⁴× for the MSE) larger: the value net "
        "cannot keep up and gradient clipping turns the update into a noisy fixed-size step",
    ),
    "pg_little_exploration": FailureMode(
        "p30_pg",
        ("pg.entropy_coef=0", "optim.lr=0.05"),
        "a 25× larger learning rate and no entropy bonus",
        "a few big steps make π nearly deterministic before it has found good behaviour; "
        "with π(a|s) ≈ 1, log π has no gradient left and exploration is over",
    ),
}


def run_failure_mode(
    name: str,
    seeds: Sequence[int],
    *,
    budget: int | None = None,
    overrides: Sequence[str] = (),
    with_working: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Train the failure mode ``name`` (and the working config) over ``seeds``; return the curves.

    Args:
        name: a key of :data:`FAILURE_MODES`.
        budget: env steps (DQN) or episodes (PG) per run; ``None`` keeps the config's.
        overrides: applied to both variants (e.g. ``torch_threads=1``).
        with_working: also train the unbroken config, for a side-by-side plot.

    Returns:
        ``{"name", "mode" (the FailureMode), "x" ("env_steps" | "episodes"), "grid" [G],
        "broken" [S, G], "working" [S, G] or None, "summaries": {"broken": [...],
        "working": [...]}}``; curves hold the greedy evaluation return (see :func:`eval_curves`).
    """
    if name not in FAILURE_MODES:
        raise ConfigError(f"No failure mode '{name}'; choose one of: {', '.join(FAILURE_MODES)}.")
    mode = FAILURE_MODES[name]
    cfg = load_config(mode.config)
    common = [*overrides] + ([] if budget is None else [f"{BUDGET_KEYS[cfg['algo']]}={budget}"])
    summaries = {"broken": run_seeds(cfg, seeds, [*common, *mode.overrides], progress=progress)}
    if with_working:
        summaries["working"] = run_seeds(cfg, seeds, common, progress=progress)
    x = X_AXES[cfg["algo"]]
    grid, curves = eval_curves(sum(summaries.values(), []), x)  # one grid for both: [2S, G]
    n = len(seeds)
    return {
        "name": name,
        "mode": mode,
        "x": x,
        "grid": grid,
        "broken": curves[:n],
        "working": curves[n:] if with_working else None,
        "summaries": summaries,
    }


def _as_config(cfg: dict | str) -> dict:
    """A config name, or a (partial) config dict laid over its algorithm's shipped YAML."""
    return check(load_config(cfg) if isinstance(cfg, str) else cfg)
