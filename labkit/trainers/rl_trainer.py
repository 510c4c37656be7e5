"""RL training loops: DQN (``train_dqn``) and REINFORCE with baseline (``train_pg``).

Each loop reads top-down like a cleanrl script: config, env, networks, then the loop with the
algorithm steps marked ``# ALGO`` and the bookkeeping (logging, evaluation, checkpoints) marked
``# PLUMBING``. The algorithm pieces themselves live in ``labkit.rl``.

Both loops stop as soon as the greedy policy is "solved": a quick evaluation reaches
``eval.solve_threshold`` and a confirmation over ``eval.solve_episodes`` episodes agrees.
Metric keys: ``charts/episodic_return``, ``charts/episodic_length``, ``charts/epsilon``,
``losses/td_loss``, ``losses/q_values``, ``losses/policy_loss``, ``losses/value_loss``,
``losses/entropy``, ``losses/grad_norm``, ``eval/mean_return``, ``eval/std_return``.

Checkpoints are ``labkit.utils.checkpoint`` files (atomic writes, ``weights_only=True`` reads):
the online network is the checkpoint's ``model``, everything else a run needs to continue
exactly (target network, replay buffer, env state, counters, RNGs) rides in its ``extra``.
Explained in notebooks/30_rl_basics.py.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from labkit.rl.dqn import dqn_update, epsilon_greedy, linear_schedule, update_target
from labkit.rl.envs import (
    evaluate_policy,
    finished_episodes,
    get_env_state,
    make_env,
    make_vector_env,
    set_env_state,
    valid_transitions,
)
from labkit.rl.networks import ActorCritic, QNetwork
from labkit.rl.pg import BASELINES, collect_episode, reinforce_update
from labkit.rl.replay import ReplayBuffer
from labkit.utils.checkpoint import (
    CheckpointError,
    checkpoint_name,
    latest_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from labkit.utils.config import ConfigError, get, load_config, merge_config
from labkit.utils.device import get_device
from labkit.utils.logging import MetricsLogger, get_logger
from labkit.utils.seed import set_rng_state, set_seed

log = get_logger(__name__)


# ==============================================================================================
# DQN
# ==============================================================================================


def train_dqn(
    cfg: dict,
    run_dir: str | Path | None = None,
    *,
    resume_from: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train DQN on ``cfg["env"]["id"]``; see labkit/configs/p30_dqn.yaml for every key.

    Args:
        cfg: nested config; missing keys take the values of p30_dqn.yaml, unknown keys raise
            ``ConfigError``.
        run_dir: folder for metrics.jsonl, TensorBoard events, config.yaml and checkpoints/
            (``None``: keep everything in memory).
        resume_from: a checkpoint file (or a run folder: its newest checkpoint) written by this
            function; the run continues exactly.
        progress: show a tqdm bar.

    Returns:
        Summary: ``env_steps``, ``episodes``, ``updates``, ``wall_time_s``, ``solved``,
        ``solved_at_env_step``, ``final_eval_mean_return``, ``eval_history`` and ``metrics``
        (every logged row).

    Raises:
        ConfigError: unknown config key. CheckpointError: unusable ``resume_from``.
    """
    cfg = with_defaults(cfg, "p30_dqn")
    with torch_threads(cfg["torch_threads"]):
        return _train_dqn(cfg, run_dir, resume_from, progress)


def _train_dqn(cfg: dict, run_dir, resume_from, progress: bool) -> dict[str, Any]:
    c, ev = cfg["dqn"], cfg["eval"]
    seed, device = cfg["seed"], get_device(cfg["device"])
    set_seed(seed)
    rng = torch.Generator().manual_seed(seed)  # ε-greedy coin flips and replay sampling

    envs = make_vector_env(
        cfg["env"]["id"], cfg["env"]["num_envs"], seed, cfg["env"]["max_episode_steps"]
    )
    obs_shape = envs.single_observation_space.shape
    num_actions = int(envs.single_action_space.n)
    q_net = QNetwork(int(np.prod(obs_shape)), num_actions, c["hidden"]).to(device)
    target_net = copy.deepcopy(q_net) if c["target_network"] else None
    optimizer = torch.optim.Adam(q_net.parameters(), lr=c["learning_rate"])
    replay = ReplayBuffer(c["buffer_size"], obs_shape, device=device)

    obs, _ = envs.reset()  # [E, *obs_shape]; the envs were seeded once in make_vector_env
    autoreset = np.zeros(envs.num_envs, dtype=bool)  # sub-envs whose next step is a reset
    state = {"env_steps": 0, "episodes": 0, "updates": 0, "wall_time_s": 0.0, "eval_history": []}
    if resume_from is not None:
        resume_from = latest_checkpoint(resume_from)
        ckpt = read_rl_checkpoint(resume_from, algo="dqn")
        extra = ckpt["extra"]
        parts = [
            ("Q-network", q_net.load_state_dict, ckpt["model"]),
            ("optimizer", optimizer.load_state_dict, ckpt["optimizer"]),
            ("replay buffer", replay.load_state_dict, extra["replay"]),
            ("env", partial(set_env_state, envs), extra["env"]),
        ]
        if target_net is not None:
            parts.append(("target network", target_net.load_state_dict, extra["target_net"]))
        _restore(resume_from, parts)
        obs, autoreset = extra["obs"].numpy(), extra["autoreset"].numpy()
        state = extra["state"]
        set_rng_state(ckpt["rng"])
        rng.set_state(extra["generator"])

    def greedy(o: torch.Tensor) -> torch.Tensor:
        return q_net(o.to(device)).argmax(dim=1)

    logger = _start_run(run_dir, cfg, resuming=resume_from is not None)
    bar = tqdm(total=c["total_env_steps"], initial=state["env_steps"], disable=not progress)
    started = time.perf_counter() - state["wall_time_s"]
    last_update: dict[str, float] = {}
    solved_at = None
    while state["env_steps"] < c["total_env_steps"]:
        before = state["env_steps"]

        # ALGO: act ε-greedily, step the envs, store only the real transitions.
        epsilon = linear_schedule(
            c["epsilon_start"], c["epsilon_end"], c["exploration_steps"], before
        )
        with torch.no_grad():
            q_values = q_net(torch.as_tensor(obs, dtype=torch.float32, device=device))  # [E, N]
        actions = epsilon_greedy(q_values, epsilon, rng).numpy()  # [E]
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        batch = valid_transitions(
            obs, actions, rewards * c["reward_scale"], next_obs, terminated, autoreset
        )
        replay.add(*batch)
        autoreset = terminated | truncated
        obs = next_obs
        state["env_steps"] += len(batch.obs)  # autoreset steps are not interactions
        now = state["env_steps"]

        # ALGO: a round of gradient steps every `train_every` env steps after warm-up.
        if now >= c["learning_starts"]:
            for _ in range(_crossings(before, now, c["train_every"]) * c["gradient_steps"]):
                sample = replay.sample(c["batch_size"], generator=rng)
                last_update = dqn_update(
                    q_net,
                    target_net,
                    optimizer,
                    sample,
                    gamma=c["gamma"],
                    double=c["double"],
                    loss_kind=c["loss"],
                    max_grad_norm=c["max_grad_norm"],
                )
                state["updates"] += 1
            if target_net is not None and _crossings(before, now, c["target_every"]):
                update_target(target_net, q_net, c["target_tau"])

        # PLUMBING: episode statistics, losses, evaluation, checkpoints.
        for episodic_return, length in finished_episodes(info):
            state["episodes"] += 1
            logger.log(
                now, {"charts/episodic_return": episodic_return, "charts/episodic_length": length}
            )
        if _crossings(before, now, cfg["log"]["every_env_steps"]):
            row = {"charts/epsilon": epsilon, "charts/SPS": now / (time.perf_counter() - started)}
            row.update({f"losses/{key}": value for key, value in last_update.items()})
            logger.log(now, row)
            bar.set_postfix(eps=f"{epsilon:.2f}", loss=f"{last_update.get('td_loss', 0):.3f}")
        bar.update(now - before)
        if _crossings(before, now, ev["every_env_steps"]):
            if _evaluate_and_log(greedy, cfg, now, state, logger):
                solved_at = now if solved_at is None else solved_at
                if ev["stop_when_solved"]:
                    break
        if run_dir is not None and _crossings(before, now, cfg["checkpoint"]["every_env_steps"]):
            state["wall_time_s"] = time.perf_counter() - started
            _save_dqn(
                run_dir, cfg, q_net, target_net, optimizer, replay, envs, obs, autoreset, state, rng
            )
    bar.close()

    state["wall_time_s"] = time.perf_counter() - started
    if run_dir is not None:
        _save_dqn(
            run_dir, cfg, q_net, target_net, optimizer, replay, envs, obs, autoreset, state, rng
        )
    envs.close()
    return _finish(greedy, cfg, state, solved_at, logger)


def _save_dqn(run_dir, cfg, q_net, target_net, optimizer, replay, envs, obs, autoreset, state, rng):
    """Everything ``train_dqn`` needs to continue exactly (the global RNGs are saved too)."""
    return save_checkpoint(
        _checkpoint_path(run_dir, state["env_steps"]),
        q_net,
        optimizer,
        step=state["env_steps"],
        config=cfg,
        algo="dqn",
        target_net=target_net,  # a module: saved by its state_dict (None without one)
        replay=replay,  # ReplayBuffer.state_dict(): the filled rows and the write position
        env=get_env_state(envs),
        obs=torch.as_tensor(obs),
        autoreset=torch.as_tensor(autoreset),
        state=copy.deepcopy(state),
        generator=rng.get_state(),
    )


# ==============================================================================================
# REINFORCE with baseline
# ==============================================================================================


def train_pg(
    cfg: dict,
    run_dir: str | Path | None = None,
    *,
    resume_from: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train REINFORCE with baseline; see labkit/configs/p30_pg.yaml for every key.

    Arguments, returned summary and errors as :func:`train_dqn` (``updates`` counts gradient
    steps, one per ``pg.episodes_per_update`` episodes).
    """
    cfg = with_defaults(cfg, "p30_pg")
    with torch_threads(cfg["torch_threads"]):
        return _train_pg(cfg, run_dir, resume_from, progress)


def _train_pg(cfg: dict, run_dir, resume_from, progress: bool) -> dict[str, Any]:
    c, ev = cfg["pg"], cfg["eval"]
    seed, device = cfg["seed"], get_device(cfg["device"])
    set_seed(seed)
    rng = torch.Generator().manual_seed(seed)  # action sampling

    env = make_env(cfg["env"]["id"], seed, cfg["env"]["max_episode_steps"])
    obs_dim = int(np.prod(env.observation_space.shape))
    model = ActorCritic(obs_dim, int(env.action_space.n), c["hidden"], c["shared_network"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=c["learning_rate"])

    state = {"env_steps": 0, "episodes": 0, "updates": 0, "wall_time_s": 0.0, "eval_history": []}
    if resume_from is not None:
        resume_from = latest_checkpoint(resume_from)
        ckpt = read_rl_checkpoint(resume_from, algo="pg")
        extra = ckpt["extra"]
        parts = [
            ("actor-critic", model.load_state_dict, ckpt["model"]),
            ("optimizer", optimizer.load_state_dict, ckpt["optimizer"]),
            ("env", partial(set_env_state, env), extra["env"]),
        ]
        _restore(resume_from, parts)
        state = extra["state"]
        set_rng_state(ckpt["rng"])
        rng.set_state(extra["generator"])

    def greedy(o: torch.Tensor) -> torch.Tensor:
        return model.logits(o.to(device)).argmax(dim=1)

    logger = _start_run(run_dir, cfg, resuming=resume_from is not None)
    bar = tqdm(total=c["total_episodes"], initial=state["episodes"], disable=not progress)
    started = time.perf_counter() - state["wall_time_s"]
    solved_at = None
    while state["episodes"] < c["total_episodes"]:
        before = state["episodes"]

        # ALGO: sample whole episodes from π, then one policy-gradient step on them.
        episodes = [
            collect_episode(env, model, rng, device) for _ in range(c["episodes_per_update"])
        ]
        metrics = reinforce_update(
            model,
            optimizer,
            episodes,
            gamma=c["gamma"],
            baseline=c["baseline"],
            normalize=c["normalize_advantages"],
            entropy_coef=c["entropy_coef"],
            value_coef=c["value_coef"],
            max_grad_norm=c["max_grad_norm"],
            reward_scale=c["reward_scale"],
        )
        state["updates"] += 1
        state["episodes"] += len(episodes)
        state["env_steps"] += sum(len(ep.rewards) for ep in episodes)
        now = state["episodes"]

        # PLUMBING: episode statistics, losses, evaluation, checkpoints (x axis: env steps).
        for ep in episodes:
            logger.log(
                state["env_steps"],
                {
                    "charts/episodic_return": ep.rewards.sum().item(),
                    "charts/episodic_length": len(ep.rewards),
                },
            )
        if _crossings(before, now, cfg["log"]["every_episodes"]):
            row = {f"losses/{k}": v for k, v in metrics.items() if k != "mean_return"}
            logger.log(state["env_steps"], row)
            bar.set_postfix(ret=f"{metrics['mean_return']:.0f}", H=f"{metrics['entropy']:.2f}")
        bar.update(now - before)
        if _crossings(before, now, ev["every_episodes"]):
            if _evaluate_and_log(greedy, cfg, state["env_steps"], state, logger):
                solved_at = state["env_steps"] if solved_at is None else solved_at
                if ev["stop_when_solved"]:
                    break
        if run_dir is not None and _crossings(before, now, cfg["checkpoint"]["every_episodes"]):
            state["wall_time_s"] = time.perf_counter() - started
            _save_pg(run_dir, cfg, model, optimizer, env, state, rng)
    bar.close()

    state["wall_time_s"] = time.perf_counter() - started
    if run_dir is not None:
        _save_pg(run_dir, cfg, model, optimizer, env, state, rng)
    env.close()
    return _finish(greedy, cfg, state, solved_at, logger)


def _save_pg(run_dir, cfg, model, optimizer, env, state, rng) -> Path:
    """Everything ``train_pg`` needs to continue exactly (the global RNGs are saved too)."""
    return save_checkpoint(
        _checkpoint_path(run_dir, state["env_steps"]),
        model,
        optimizer,
        step=state["env_steps"],
        config=cfg,
        algo="pg",
        env=get_env_state(env),
        state=copy.deepcopy(state),
        generator=rng.get_state(),
    )


# ==============================================================================================
# Checkpoints: labkit.utils.checkpoint files with the RL state in ``extra``
# ==============================================================================================


def read_rl_checkpoint(path: str | Path, algo: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train_dqn` or :func:`train_pg` (``weights_only=True``).

    Args:
        path: a ``step_*.pt`` file, a ``checkpoints/`` folder or a run folder (newest file).
        algo: ``"dqn"`` or ``"pg"`` to insist on one kind.

    Returns:
        The :func:`labkit.utils.checkpoint.save_checkpoint` payload: ``model`` (the online
        Q-network or the actor-critic), ``optimizer``, ``step`` (env steps), ``config``, ``rng``
        (global RNGs) and ``extra`` (``algo``, ``state`` with the counters, ``env``,
        ``generator``; for DQN also ``target_net``, ``replay``, ``obs``, ``autoreset``).

    Raises:
        CheckpointError: missing, truncated or corrupt file, not an RL checkpoint, or the
            other algorithm's.
    """
    path = latest_checkpoint(path)
    payload = read_checkpoint(path)
    found = payload.get("extra", {}).get("algo")
    if found not in ("dqn", "pg"):
        raise CheckpointError(
            f"'{path}' is a labkit checkpoint but not an RL one (no extra['algo']); resume RL runs "
            f"from runs/p30_dqn/... or runs/p30_pg/... checkpoints."
        )
    if algo is not None and found != algo:
        raise CheckpointError(
            f"'{path}' was written by the {found.upper()} trainer, not {algo.upper()}; resume it "
            f"with its own config (python -m labkit.train p30_{found} --resume ...)."
        )
    return payload


def _restore(path: Path, parts: list[tuple[str, Callable[[Any], Any], Any]]) -> None:
    """Call ``load(state)`` for each ``(name, load, state)``; a mismatch is a ``CheckpointError``.

    A state that does not fit (other network widths, replay capacity, number of envs) means the
    checkpoint was made with another config: say so, instead of torch's size-mismatch trace.
    """
    for name, load, state in parts:
        if state is None:
            raise CheckpointError(
                f"Checkpoint '{path}' holds no {name} state (was it written with "
                f"dqn.target_network=false?). Resume with the config saved in its run folder."
            )
        try:
            load(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise CheckpointError(
                f"Checkpoint '{path}': the {name} state does not fit this run ({first_line}). "
                f"It was made with a different config; resume with the config saved in its run "
                f"folder (the CLI's --resume does that)."
            ) from None


# ==============================================================================================
# Shared helpers
# ==============================================================================================


def with_defaults(cfg: dict, name: str) -> dict:
    """``cfg`` on top of labkit/configs/<name>.yaml; keys unknown to the YAML raise ``ConfigError``.

    So a partial config (a test's ``{"dqn": {"total_env_steps": 500}}``) runs, and a typo such
    as ``dqn.learning_rte`` fails loudly instead of silently using the default.
    """
    merged = merge_config(load_config(name), cfg, strict=True)
    for dotted, allowed in _CHOICES.items():
        value = get(merged, dotted, default=allowed[0])
        if value not in allowed:
            choices = ", ".join(map(repr, allowed))
            raise ConfigError(f"Config key '{dotted}' is {value!r}; expected one of {choices}.")
    return merged


# keys with a fixed set of values, checked before anything runs (the first value is the default)
_CHOICES = {"dqn.loss": ("huber", "mse"), "pg.baseline": BASELINES}


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` intra-op torch threads, then restore the previous count.

    ``None`` leaves torch's setting alone: a library call should not change a process-wide
    knob as a side effect. The RL configs may ask for 1, because the matmuls of a 2-layer MLP on
    4 numbers are too small for threads to pay off.
    """
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _crossings(before: int, now: int, every: int) -> int:
    """How many multiples of ``every`` lie in (before, now]; 0 when ``every`` <= 0 (disabled).

    Counters may jump by several steps at once (vector envs), so ``now % every == 0`` would miss.
    """
    if every <= 0:
        return 0
    return now // every - before // every


def _start_run(run_dir: str | Path | None, cfg: dict, resuming: bool) -> MetricsLogger:
    """The metrics logger; a new run folder also gets the resolved config.yaml.

    A resumed run appends to the folder's metrics.jsonl and keeps its config.yaml (the CLI
    writes the resumed config beside it as config.resume<step>.yaml).
    """
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        if not resuming:
            (Path(run_dir) / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return MetricsLogger(run_dir)


def _checkpoint_path(run_dir: str | Path, env_steps: int) -> Path:
    return Path(run_dir) / "checkpoints" / checkpoint_name(env_steps)


def _evaluate_and_log(greedy, cfg: dict, step: int, state: dict, logger: MetricsLogger) -> bool:
    """Quick greedy evaluation; if it reaches the threshold, confirm over ``solve_episodes``.

    Appends to ``state["eval_history"]`` and returns whether the run is solved.
    """
    ev = cfg["eval"]
    eval_seed = cfg["seed"] + 10_000 if ev["seed"] is None else ev["seed"]
    returns = evaluate_policy(
        greedy, cfg["env"]["id"], ev["episodes"], eval_seed, cfg["env"]["max_episode_steps"]
    )
    solved = False
    if returns.mean() >= ev["solve_threshold"] and ev["solve_episodes"] > ev["episodes"]:
        returns = evaluate_policy(
            greedy,
            cfg["env"]["id"],
            ev["solve_episodes"],
            eval_seed,
            cfg["env"]["max_episode_steps"],
        )
    if len(returns) >= ev["solve_episodes"]:
        solved = bool(returns.mean() >= ev["solve_threshold"])
    record = {
        "env_steps": state["env_steps"],
        "episodes": state["episodes"],
        "mean_return": float(returns.mean()),
        "num_episodes": len(returns),
    }
    state["eval_history"].append(record)
    logger.log(step, {"eval/mean_return": returns.mean(), "eval/std_return": returns.std()})
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


def _finish(greedy, cfg: dict, state: dict, solved_at: int | None, logger) -> dict[str, Any]:
    """Final evaluation over ``solve_episodes`` (unless the last one was), then the summary."""
    ev = cfg["eval"]
    history = state["eval_history"]
    if not (
        history
        and history[-1]["num_episodes"] >= ev["solve_episodes"]
        and history[-1]["env_steps"] == state["env_steps"]
    ):
        eval_seed = cfg["seed"] + 10_000 if ev["seed"] is None else ev["seed"]
        returns = evaluate_policy(
            greedy,
            cfg["env"]["id"],
            ev["solve_episodes"],
            eval_seed,
            cfg["env"]["max_episode_steps"],
        )
        history.append(
            {
                "env_steps": state["env_steps"],
                "episodes": state["episodes"],
                "mean_return": float(returns.mean()),
                "num_episodes": len(returns),
            }
        )
        logger.log(
            state["env_steps"],
            {"eval/mean_return": returns.mean(), "eval/std_return": returns.std()},
        )
    final = history[-1]["mean_return"]
    logger.close()
    return {
        "env_steps": state["env_steps"],
        "episodes": state["episodes"],
        "updates": state["updates"],
        "wall_time_s": state["wall_time_s"],
        "solved": solved_at is not None or final >= ev["solve_threshold"],
        "solved_at_env_step": solved_at,
        "final_eval_mean_return": final,
        "eval_history": history,
        "metrics": logger.history,
    }
