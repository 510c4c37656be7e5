"""What the RL loops repeat around their algorithm, written once for DQN and REINFORCE.

Episode statistics from vector-env steps, greedy evaluation with a "solved" confirmation, the
loop's counters and closing summary, and checkpoints of a loop's whole state. The algorithms and
their loops live beside this file (``labkit.rl.loops``); signals, the metrics logger, the
progress bar and the "not twice for one step" guard are the lab-wide
:class:`labkit.trainers.plumbing.LoopPlumbing`. This module knows neither algorithm.

Checkpoints are ``labkit.utils.checkpoint`` files (atomic writes, ``weights_only=True`` reads):
the network being trained is the checkpoint's ``model``; everything else a loop needs to
continue exactly (target network, replay buffer, env state, counters, RNGs) rides in ``extra``,
tagged with the loop's name so that one loop never resumes another's file.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import nn

from labkit.trainers.plumbing import LoopPlumbing, due
from labkit.utils.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_name,
    open_checkpoint,
    save_checkpoint,
)
from labkit.utils.logging import MetricsLogger, get_logger

log = get_logger(__name__)


# ----------------------------------------------------------------------------------------------
# Rollout statistics and greedy evaluation
# ----------------------------------------------------------------------------------------------


def finished_episodes(info: dict[str, Any]) -> list[tuple[float, int]]:
    """``(return, length)`` of every episode that ended in this vector step (may be empty)."""
    if "episode" not in info:
        return []
    mask = info["_episode"]
    returns, lengths = info["episode"]["r"][mask], info["episode"]["l"][mask]
    return [(float(r), int(n)) for r, n in zip(returns, lengths, strict=True)]


def evaluate_policy(
    act: Callable[[torch.Tensor], torch.Tensor],
    env_id: str,
    num_episodes: int,
    seed: int,
    max_episode_steps: int | None = None,
) -> np.ndarray:
    """Return of ``num_episodes`` episodes of the policy ``act``, run side by side.

    Episode ``i`` starts from ``reset(seed=seed + i)``, so every evaluation of a run sees the
    same start states and successive evaluations are comparable. Training RNGs are not touched.

    Args:
        act: maps observations [N, *obs_shape] (float32, CPU) to actions [N]; pass a greedy
            policy (argmax Q, or argmax logits) to measure what the agent has learned.

    Returns:
        [num_episodes] float64 undiscounted returns.
    """
    envs = SyncVectorEnv(
        [lambda: gym.make(env_id, max_episode_steps=max_episode_steps)] * num_episodes,
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )
    obs, _ = envs.reset(seed=seed)
    returns = np.zeros(num_episodes)
    finished = np.zeros(num_episodes, dtype=bool)
    while not finished.all():
        with torch.no_grad():
            actions = act(torch.as_tensor(obs, dtype=torch.float32))
        obs, rewards, terminated, truncated, _ = envs.step(actions.cpu().numpy())
        returns += np.where(finished, 0.0, rewards)  # finished envs keep stepping; ignore them
        finished |= terminated | truncated
    envs.close()
    return returns


def new_loop_state() -> dict[str, Any]:
    """The counters every RL loop keeps (saved in its checkpoints)."""
    return {"env_steps": 0, "episodes": 0, "updates": 0, "wall_time_s": 0.0, "eval_history": []}


def _greedy_returns(greedy, cfg: dict, episodes: int) -> np.ndarray:
    evaluation = cfg["eval"]
    eval_seed = cfg["seed"] + 10_000 if evaluation["seed"] is None else evaluation["seed"]
    return evaluate_policy(
        greedy, cfg["env"]["id"], episodes, eval_seed, cfg["env"]["max_episode_steps"]
    )


def _record(state: dict, returns: np.ndarray, step: int, logger: MetricsLogger) -> None:
    state["eval_history"].append(
        {
            "env_steps": state["env_steps"],
            "episodes": state["episodes"],
            "mean_return": float(returns.mean()),
            "num_episodes": len(returns),
        }
    )
    logger.log(step, {"eval/mean_return": returns.mean(), "eval/std_return": returns.std()})


def evaluate_and_log(greedy, cfg: dict, step: int, state: dict, logger: MetricsLogger) -> bool:
    """Quick greedy evaluation; if it reaches the threshold, confirm over ``solve_episodes``.

    Appends to ``state["eval_history"]`` and returns whether the run is solved.
    """
    evaluation = cfg["eval"]
    returns = _greedy_returns(greedy, cfg, evaluation["episodes"])
    solved = False
    threshold = evaluation["solve_threshold"]
    if returns.mean() >= threshold and evaluation["solve_episodes"] > evaluation["episodes"]:
        returns = _greedy_returns(greedy, cfg, evaluation["solve_episodes"])
    if len(returns) >= evaluation["solve_episodes"]:
        solved = bool(returns.mean() >= threshold)
    _record(state, returns, step, logger)
    log.info(
        "env steps %d | episodes %d | greedy return %.1f ± %.1f over %d episodes%s",
        state["env_steps"],
        state["episodes"],
        returns.mean(),
        returns.std(),
        len(returns),
        " | solved" if solved else "",
    )
    return solved


def checkpoint_once(loop: LoopPlumbing, state: dict, save: Callable[[], Any] | None) -> None:
    """``save()`` the loop's state, unless there is no run folder (``save`` is None) or this env
    step already has its file (the cadence and the end of a run may both ask for it)."""
    if save is not None and loop.once("checkpoint", state["env_steps"]):
        save()


def evaluate_and_save(
    greedy, cfg: dict, state: dict, loop: LoopPlumbing, span: tuple[int, int], step: int,
    save: Callable[[], Any] | None,
) -> bool:  # fmt: skip
    """The end of a loop iteration that moved the budget counter over ``span = (before, now)``:
    evaluate when ``trainer.eval_every`` is crossed, checkpoint when ``trainer.ckpt_every`` is.

    Returns True when the policy is solved and ``eval.stop_when_solved`` ends the run; the step
    of the first solve is kept in ``state["solved_at"]`` (and so in every later checkpoint).
    """
    trainer = cfg["trainer"]
    if due(*span, trainer["eval_every"]) and evaluate_and_log(
        greedy, cfg, step, state, loop.metrics
    ):
        state["solved_at"] = state.get("solved_at") or step
        if cfg["eval"]["stop_when_solved"]:
            return True
    if due(*span, trainer["ckpt_every"]):
        checkpoint_once(loop, state, save)
    return False


def stop_reason(loop: LoopPlumbing, solved: bool, count: int, budget: int) -> str:
    """Why a loop ended: the signal's name, ``"solved"``, ``"max_steps"`` (the budget counter
    reached ``budget``) or ``"stop_after"`` (the run's ``stop_after`` came first)."""
    if loop.stopping is not None:
        return loop.stopping
    if solved:
        return "solved"
    return "max_steps" if count >= budget else "stop_after"


def close_loop(
    greedy, cfg: dict, state: dict, loop: LoopPlumbing, stopped_by: str,
    save: Callable[[], Any] | None, started: float,
) -> dict[str, Any]:  # fmt: skip
    """The end of a loop, still inside its ``LoopPlumbing`` block (a second Ctrl-C cannot cut the
    last checkpoint short): write it, evaluate, summarise.

    ``started`` is the ``time.perf_counter()`` the wall clock counts from (earlier parts of a
    resumed run included).
    """
    if stopped_by == loop.stopping:  # a signal ended the loop (and not one during this close)
        log.warning("%s received: stopping at %d env steps", stopped_by, state["env_steps"])
    checkpoint_once(loop, state, save)
    state["wall_time_s"] = time.perf_counter() - started
    return {**finish(greedy, cfg, state, loop.metrics), "stopped_by": stopped_by}


def finish(greedy, cfg: dict, state: dict, logger: MetricsLogger) -> dict[str, Any]:
    """Final evaluation over ``solve_episodes`` (unless the last one was), then the summary.

    ``state["solved_at"]`` (the env step of the first confirmed solve, kept in checkpoints so a
    resumed run remembers it) or a final mean return at the threshold makes the run solved.
    """
    evaluation = cfg["eval"]
    history = state["eval_history"]
    if not (
        history
        and history[-1]["num_episodes"] >= evaluation["solve_episodes"]
        and history[-1]["env_steps"] == state["env_steps"]
    ):
        returns = _greedy_returns(greedy, cfg, evaluation["solve_episodes"])
        _record(state, returns, state["env_steps"], logger)
    final = history[-1]["mean_return"]
    solved_at = state.get("solved_at")
    return {
        "env_steps": state["env_steps"],
        "episodes": state["episodes"],
        "updates": state["updates"],
        "wall_time_s": state["wall_time_s"],
        "solved": solved_at is not None or final >= evaluation["solve_threshold"],
        "solved_at_env_step": solved_at,
        "final_eval_mean_return": final,
        "eval_history": history,
        "metrics": logger.history,
    }


# ----------------------------------------------------------------------------------------------
# Checkpoints of a loop's state
# ----------------------------------------------------------------------------------------------


def save_loop_checkpoint(
    run_dir: str | Path,
    loop: str,
    state: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: dict,
    **extra: Any,
) -> Path:
    """``run_dir/checkpoints/step_<env steps>.pt`` with the loop's name, counters and ``extra``."""
    return save_checkpoint(
        Path(run_dir) / "checkpoints" / checkpoint_name(state["env_steps"]),
        model,
        optimizer,
        step=state["env_steps"],
        config=cfg,
        algo=loop,
        state=copy.deepcopy(state),
        **extra,
    )


def read_loop_checkpoint(path: str | Path | Checkpoint, loop: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_loop_checkpoint` (``weights_only=True``).

    Args:
        path: a ``step_*.pt`` file, a ``checkpoints/`` folder, a run folder (newest file), or a
            :class:`Checkpoint` already read.
        loop: the loop name (e.g. ``"dqn"``) to insist on.

    Returns:
        The :func:`labkit.utils.checkpoint.save_checkpoint` payload: ``model``, ``optimizer``,
        ``step`` (env steps), ``config``, ``rng`` (global RNGs) and ``extra`` (``algo``,
        ``state`` with the counters, and the loop's own entries).

    Raises:
        CheckpointError: missing, truncated or corrupt file, not an RL loop's checkpoint, or
            another loop's.
    """
    checkpoint = open_checkpoint(path)
    payload = checkpoint.payload
    found = payload.get("extra", {}).get("algo")
    if not isinstance(found, str):
        raise CheckpointError(
            f"'{checkpoint.path}' is a labkit checkpoint but not an RL one (no extra['algo']); "
            f"resume RL runs from runs/p30_dqn/... or runs/p30_pg/... checkpoints."
        )
    if loop is not None and found != loop:
        raise CheckpointError(
            f"'{checkpoint.path}' was written by the {found.upper()} loop, not {loop.upper()}; "
            f"resume it with its own config (python -m labkit.train p30_{found} --resume ...)."
        )
    return payload
