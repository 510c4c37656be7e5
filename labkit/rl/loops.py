"""RL training loops: DQN (``train_dqn``) and REINFORCE with baseline (``train_pg``).

Each loop reads top-down like a cleanrl script: config, env, networks, then the loop with the
algorithm steps marked ``# ALGO`` and the bookkeeping (logging, evaluation, checkpoints) marked
``# PLUMBING``. The algorithm pieces live beside this file (``dqn``, ``pg``, ``losses``,
``replay``, ``envs``); what every RL loop repeats around it is ``labkit.rl.plumbing`` (evaluation,
checkpoints, the summary) and ``labkit.trainers.plumbing.LoopPlumbing`` (signals, metrics, bar).

Both loops stop as soon as the greedy policy is "solved": a quick evaluation reaches
``eval.solve_threshold`` and a confirmation over ``eval.solve_episodes`` episodes agrees.
Metric keys: ``charts/episodic_return``, ``charts/episodic_length``, ``charts/epsilon``,
``losses/td_loss``, ``losses/q_values``, ``losses/policy_loss``, ``losses/value_loss``,
``losses/entropy``, ``losses/grad_norm``, ``eval/mean_return``, ``eval/std_return``.
The caller seeds the global RNGs (``labkit.rl.task.run`` does); each loop seeds its envs and its
own generator from ``cfg["seed"]``. Explained in notebooks/30_rl_basics.py.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from labkit.rl.dqn import dqn_update, epsilon_greedy, linear_schedule, update_target
from labkit.rl.envs import (
    get_env_state,
    make_env,
    make_vector_env,
    set_env_state,
    valid_transitions,
)
from labkit.rl.networks import ActorCritic, QNetwork
from labkit.rl.pg import collect_episode, reinforce_update
from labkit.rl.plumbing import (
    close_loop,
    evaluate_and_save,
    finished_episodes,
    new_loop_state,
    read_loop_checkpoint,
    save_loop_checkpoint,
    stop_reason,
)
from labkit.rl.replay import ReplayBuffer
from labkit.trainers.guards import check_finite_metrics, check_finite_weights
from labkit.trainers.plumbing import LoopPlumbing, crossings, due
from labkit.utils.checkpoint import Checkpoint, load_checkpoint, restore_states
from labkit.utils.logging import get_logger
from labkit.utils.seed import set_rng_state

log = get_logger(__name__)

# ==============================================================================================
# DQN
# ==============================================================================================


@dataclass
class DQNSetup:
    """What a DQN run acts and learns with (:func:`build_dqn`)."""

    envs: Any  # E seeded sub-envs stepped together (next-step autoreset)
    q_net: QNetwork
    target_net: QNetwork | None  # None: bootstrap from q_net itself (a failure mode)
    optimizer: torch.optim.Optimizer
    replay: ReplayBuffer
    rng: torch.Generator  # ε-greedy coin flips and replay sampling


def build_dqn(cfg: dict, device: torch.device) -> DQNSetup:
    """Envs, networks, Adam, replay buffer and generator of a complete p30_dqn config (seed the
    global RNGs first: the Q-network's initial weights draw from them)."""
    dqn, seed = cfg["dqn"], cfg["seed"]
    rng = torch.Generator().manual_seed(seed)
    envs = make_vector_env(
        cfg["env"]["id"], cfg["env"]["num_envs"], seed, cfg["env"]["max_episode_steps"]
    )
    obs_shape = envs.single_observation_space.shape
    num_actions = int(envs.single_action_space.n)
    q_net = QNetwork(int(np.prod(obs_shape)), num_actions, dqn["hidden"]).to(device)
    target_net = copy.deepcopy(q_net) if dqn["target_network"] else None
    optimizer = torch.optim.Adam(q_net.parameters(), lr=cfg["optim"]["lr"])
    replay = ReplayBuffer(dqn["buffer_size"], obs_shape, device=device)
    return DQNSetup(envs, q_net, target_net, optimizer, replay, rng)


def train_dqn(
    cfg: dict,
    run_dir: str | Path | None,
    device: torch.device,
    *,
    resume_from: str | Path | Checkpoint | None = None,
    init_from: str | Path | Checkpoint | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    setup: DQNSetup | None = None,
) -> dict[str, Any]:
    """Train DQN on ``cfg["env"]["id"]`` (a complete p30_dqn config; see the YAML for every key).

    Args:
        run_dir: folder for metrics.jsonl, TensorBoard events and checkpoints/ (``None``: keep
            everything in memory).
        resume_from: a checkpoint (file, run folder, or :class:`Checkpoint`) written by this
            loop; the run continues exactly.
        init_from: a checkpoint whose network weights start a new run (nothing else is kept).
        stop_after: end the run, as a signal would (checkpoint, final evaluation), after the
            first iteration that brings the env-step counter to this many (the counter moves by
            up to ``env.num_envs`` per iteration); ``None``: run to ``trainer.max_env_steps``.
        setup: what :func:`build_dqn` made (``None``: built here); trained in place, its envs
            closed at the end.

    Returns:
        Summary: ``env_steps``, ``episodes``, ``updates``, ``wall_time_s``, ``solved``,
        ``solved_at_env_step``, ``final_eval_mean_return``, ``eval_history``, ``metrics`` (every
        logged row) and ``stopped_by`` (``"max_steps"``, ``"solved"``, ``"stop_after"`` or the
        signal's name: on Ctrl-C or SIGTERM the loop finishes its iteration, saves and returns).

    Raises:
        TrainingDiverged: a loss became NaN/Inf, or the weights did before a checkpoint.
    """
    dqn, trainer = cfg["dqn"], cfg["trainer"]
    setup = build_dqn(cfg, device) if setup is None else setup
    envs, q_net, target_net = setup.envs, setup.q_net, setup.target_net
    optimizer, replay, rng = setup.optimizer, setup.replay, setup.rng
    if init_from is not None:  # a warm start: the Q-network's weights, everything else fresh
        load_checkpoint(init_from, q_net)
        if target_net is not None:
            target_net.load_state_dict(q_net.state_dict())

    obs, _ = envs.reset()  # [E, *obs_shape]; the envs were seeded once in make_vector_env
    autoreset = np.zeros(envs.num_envs, dtype=bool)  # sub-envs whose next step is a reset
    state = new_loop_state()
    if resume_from is not None:
        ckpt = read_loop_checkpoint(resume_from, loop="dqn")
        extra = ckpt["extra"]
        parts = {
            "Q-network": (q_net, ckpt["model"]),
            "optimizer": (optimizer, ckpt["optimizer"]),
            "replay buffer": (replay, extra["replay"]),
        }
        if target_net is not None:
            parts["target network"] = (target_net, extra["target_net"])
        parts["env"] = (SimpleNamespace(load_state_dict=partial(set_env_state, envs)), extra["env"])
        restore_states(getattr(resume_from, "path", resume_from), parts)
        obs, autoreset = extra["obs"].numpy(), extra["autoreset"].numpy()
        state = extra["state"]
        set_rng_state(ckpt["rng"])
        rng.set_state(extra["generator"])

    def greedy(o: torch.Tensor) -> torch.Tensor:
        return q_net(o.to(device)).argmax(dim=1)

    def save() -> None:
        check_finite_weights(state["env_steps"], q_net, target_net)
        state["wall_time_s"] = time.perf_counter() - started  # resumed runs count on from here
        save_loop_checkpoint(
            run_dir,
            "dqn",
            state,
            q_net,
            optimizer,
            cfg,
            target_net=target_net,  # a module: saved by its state_dict (None without one)
            replay=replay,  # ReplayBuffer.state_dict(): the filled rows and the write position
            env=get_env_state(envs),
            obs=torch.as_tensor(obs),
            autoreset=torch.as_tensor(autoreset),
            generator=rng.get_state(),
        )

    checkpoint = save if run_dir is not None else None
    budget = trainer["max_env_steps"]
    until = min(stop_after or budget, budget)
    started = time.perf_counter() - state["wall_time_s"]
    last_update: dict[str, float] = {}
    solved = False
    with LoopPlumbing(
        run_dir, total=budget, initial=state["env_steps"], desc="dqn", unit="env-step",
        progress=progress,
    ) as loop:  # fmt: skip
        while state["env_steps"] < until and not loop.stopping:
            before = state["env_steps"]

            # ALGO: act ε-greedily, step the envs, store only the real transitions.
            epsilon = linear_schedule(
                dqn["epsilon_start"], dqn["epsilon_end"], dqn["exploration_steps"], before
            )
            with torch.no_grad():
                q_values = q_net(torch.as_tensor(obs, dtype=torch.float32, device=device))  # [E, N]
            actions = epsilon_greedy(q_values, epsilon, rng).numpy()  # [E]
            next_obs, rewards, terminated, truncated, info = envs.step(actions)
            batch = valid_transitions(
                obs, actions, rewards * dqn["reward_scale"], next_obs, terminated, autoreset
            )
            replay.add(*batch)
            autoreset = terminated | truncated
            obs = next_obs
            state["env_steps"] += len(batch.obs)  # autoreset steps are not interactions
            now = state["env_steps"]

            # ALGO: a round of gradient steps every `train_every` env steps after warm-up.
            if now >= dqn["learning_starts"]:
                for _ in range(crossings(before, now, dqn["train_every"]) * dqn["gradient_steps"]):
                    sample = replay.sample(dqn["batch_size"], generator=rng)
                    last_update = dqn_update(
                        q_net,
                        target_net,
                        optimizer,
                        sample,
                        gamma=dqn["gamma"],
                        double=dqn["double"],
                        loss_kind=dqn["loss"],
                        max_grad_norm=trainer["grad_clip"],
                    )
                    state["updates"] += 1
                    check_finite_metrics(now, {f"losses/{k}": v for k, v in last_update.items()})
                if target_net is not None and crossings(before, now, dqn["target_every"]):
                    update_target(target_net, q_net, dqn["target_tau"])

            # PLUMBING: episode statistics, losses, evaluation, checkpoints.
            for episodic_return, length in finished_episodes(info):
                state["episodes"] += 1
                loop.metrics.log(
                    now,
                    {"charts/episodic_return": episodic_return, "charts/episodic_length": length},
                )
            loop.advance(now - before)
            if due(before, now, trainer["log_every"]):
                row = {
                    "charts/epsilon": epsilon,
                    "charts/SPS": now / (time.perf_counter() - started),
                }
                row.update({f"losses/{key}": value for key, value in last_update.items()})
                loop.metrics.log(now, row)
                loop.bar.set_postfix(
                    eps=f"{epsilon:.2f}", loss=f"{last_update.get('td_loss', 0):.3f}"
                )
            if evaluate_and_save(greedy, cfg, state, loop, (before, now), now, checkpoint):
                solved = True
                break
        envs.close()
        stopped_by = stop_reason(loop, solved, state["env_steps"], budget)
        return close_loop(greedy, cfg, state, loop, stopped_by, checkpoint, started)


# ==============================================================================================
# REINFORCE with baseline
# ==============================================================================================


@dataclass
class PGSetup:
    """What a REINFORCE run acts and learns with (:func:`build_pg`)."""

    env: Any  # one seeded env: whole episodes, one after another
    model: ActorCritic  # policy π(a|s) and value baseline V(s)
    optimizer: torch.optim.Optimizer
    rng: torch.Generator  # action sampling


def build_pg(cfg: dict, device: torch.device) -> PGSetup:
    """Env, actor-critic, Adam and generator of a complete p30_pg config (seed the global RNGs
    first: the network's initial weights draw from them)."""
    pg, seed = cfg["pg"], cfg["seed"]
    rng = torch.Generator().manual_seed(seed)
    env = make_env(cfg["env"]["id"], seed, cfg["env"]["max_episode_steps"])
    obs_dim = int(np.prod(env.observation_space.shape))
    model = ActorCritic(obs_dim, int(env.action_space.n), pg["hidden"], pg["shared_network"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["optim"]["lr"])
    return PGSetup(env, model, optimizer, rng)


def train_pg(
    cfg: dict,
    run_dir: str | Path | None,
    device: torch.device,
    *,
    resume_from: str | Path | Checkpoint | None = None,
    init_from: str | Path | Checkpoint | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    setup: PGSetup | None = None,
) -> dict[str, Any]:
    """Train REINFORCE with baseline (a complete p30_pg config; see the YAML for every key).

    Arguments and returned summary as :func:`train_dqn` (``updates`` counts gradient steps, one
    per ``pg.episodes_per_update`` episodes; the budget is ``trainer.max_episodes``, and
    ``stop_after`` counts episodes too: the run ends after the update that reaches it;
    ``setup`` comes from :func:`build_pg`).
    """
    pg, trainer = cfg["pg"], cfg["trainer"]
    setup = build_pg(cfg, device) if setup is None else setup
    env, model, optimizer, rng = setup.env, setup.model, setup.optimizer, setup.rng
    if init_from is not None:  # a warm start: the actor-critic's weights, everything else fresh
        load_checkpoint(init_from, model)

    state = new_loop_state()
    if resume_from is not None:
        ckpt = read_loop_checkpoint(resume_from, loop="pg")
        extra = ckpt["extra"]
        parts = {
            "actor-critic": (model, ckpt["model"]),
            "optimizer": (optimizer, ckpt["optimizer"]),
            "env": (SimpleNamespace(load_state_dict=partial(set_env_state, env)), extra["env"]),
        }
        restore_states(getattr(resume_from, "path", resume_from), parts)
        state = extra["state"]
        set_rng_state(ckpt["rng"])
        rng.set_state(extra["generator"])

    def greedy(o: torch.Tensor) -> torch.Tensor:
        return model.logits(o.to(device)).argmax(dim=1)

    def save() -> None:
        check_finite_weights(state["env_steps"], model)
        state["wall_time_s"] = time.perf_counter() - started  # resumed runs count on from here
        save_loop_checkpoint(
            run_dir, "pg", state, model, optimizer, cfg, env=get_env_state(env),
            generator=rng.get_state(),
        )  # fmt: skip

    checkpoint = save if run_dir is not None else None
    budget = trainer["max_episodes"]
    until = min(stop_after or budget, budget)
    started = time.perf_counter() - state["wall_time_s"]
    solved = False
    with LoopPlumbing(
        run_dir, total=budget, initial=state["episodes"], desc="pg", unit="episode",
        progress=progress,
    ) as loop:  # fmt: skip
        while state["episodes"] < until and not loop.stopping:
            before = state["episodes"]

            # ALGO: sample whole episodes from π, then one policy-gradient step on them.
            episodes = [
                collect_episode(env, model, rng, device) for _ in range(pg["episodes_per_update"])
            ]
            metrics = reinforce_update(
                model,
                optimizer,
                episodes,
                gamma=pg["gamma"],
                baseline=pg["baseline"],
                normalize=pg["normalize_advantages"],
                entropy_coef=pg["entropy_coef"],
                value_coef=pg["value_coef"],
                max_grad_norm=trainer["grad_clip"],
                reward_scale=pg["reward_scale"],
            )
            state["updates"] += 1
            state["episodes"] += len(episodes)
            state["env_steps"] += sum(len(ep.rewards) for ep in episodes)
            now = state["episodes"]
            losses = {f"losses/{k}": v for k, v in metrics.items() if k != "mean_return"}
            check_finite_metrics(state["env_steps"], losses)

            # PLUMBING: episode statistics, losses, evaluation, checkpoints (x axis: env steps).
            for ep in episodes:
                loop.metrics.log(
                    state["env_steps"],
                    {
                        "charts/episodic_return": ep.rewards.sum().item(),
                        "charts/episodic_length": len(ep.rewards),
                    },
                )
            loop.advance(now - before)
            if due(before, now, trainer["log_every"]):
                loop.metrics.log(state["env_steps"], losses)
                loop.bar.set_postfix(
                    ret=f"{metrics['mean_return']:.0f}", H=f"{metrics['entropy']:.2f}"
                )
            if evaluate_and_save(
                greedy, cfg, state, loop, (before, now), state["env_steps"], checkpoint
            ):
                solved = True
                break
        env.close()
        stopped_by = stop_reason(loop, solved, state["episodes"], budget)
        return close_loop(greedy, cfg, state, loop, stopped_by, checkpoint, started)


BUILDS = {"dqn": build_dqn, "pg": build_pg}
LOOPS = {"dqn": train_dqn, "pg": train_pg}
