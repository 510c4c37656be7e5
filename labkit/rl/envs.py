"""Environments: seeded construction, valid transitions under vector autoreset, env state.

The classic off-policy bug lives here. Gymnasium >= 1.0 vector envs autoreset on the *next*
step (``AutoresetMode.NEXT_STEP``):

    step t   : action a_t -> obs s_{t+1} (the TRUE final obs), reward r_t, terminated/truncated
    step t+1 : action ignored -> obs s_0' (reset obs of the new episode), reward 0, both flags False

So the transition (s_{t+1}, a, 0, s_0') produced at step t+1 is not a transition of the MDP and
must never be stored. And at step t the two flags mean different things:
- ``terminated``: the MDP reached a terminal state; the target has no bootstrap term.
- ``truncated``: a time limit cut the episode; s_{t+1} is a normal state, so the target
  bootstraps from it: y = r + γ max_a Q(s_{t+1}, a). Under next-step autoreset s_{t+1} is exactly
  the obs returned by step t, so no ``final_obs`` lookup is needed.
:func:`valid_transitions` applies both rules. Explained in notebooks/30_rl_basics.py.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import RecordEpisodeStatistics
from gymnasium.wrappers.vector import RecordEpisodeStatistics as VectorRecordEpisodeStatistics

# ----------------------------------------------------------------------------------------------
# Construction and seeding
# ----------------------------------------------------------------------------------------------


def make_env(env_id: str, seed: int, max_episode_steps: int | None = None) -> gym.Env:
    """One seeded env that records episode statistics (``info["episode"]`` at episode ends).

    The env is reset once with ``seed`` here, which seeds its own RNG; every later ``reset()``
    must be called *without* a seed so that episodes differ but the whole run stays reproducible.
    The action space is seeded too, so ``env.action_space.sample()`` is reproducible.

    Args:
        env_id: a registered gymnasium id, e.g. ``"CartPole-v1"``.
        seed: the run's seed.
        max_episode_steps: override the registered time limit (``None`` keeps it: 500 for
            CartPole-v1). Tests use a tiny limit to force truncations.
    """
    env = gym.make(env_id, max_episode_steps=max_episode_steps)
    env = RecordEpisodeStatistics(env)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    env.observation_space.seed(seed)
    return env


def make_vector_env(
    env_id: str, num_envs: int, seed: int, max_episode_steps: int | None = None
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_id`` stepped in lock-step, autoresetting on the NEXT step.

    Sub-env ``i`` is seeded with ``seed + i`` (gymnasium's convention for ``reset(seed=int)``).
    Episode statistics arrive as ``info["episode"]["r" | "l"]`` masked by ``info["_episode"]``;
    read them with :func:`finished_episodes`.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")

    def thunk() -> gym.Env:
        return gym.make(env_id, max_episode_steps=max_episode_steps)

    # SyncVectorEnv: CartPole steps in microseconds, so subprocesses would only add overhead.
    envs = SyncVectorEnv([thunk] * num_envs, autoreset_mode=AutoresetMode.NEXT_STEP)
    envs = VectorRecordEpisodeStatistics(envs)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    envs.single_action_space.seed(seed)
    return envs


# ----------------------------------------------------------------------------------------------
# Valid transitions under next-step autoreset
# ----------------------------------------------------------------------------------------------


class Transitions(NamedTuple):
    """A batch of MDP transitions (s, a, r, s', terminated), each with leading dimension [B]."""

    obs: np.ndarray  # [B, *obs_shape]  s
    actions: np.ndarray  # [B]  a
    rewards: np.ndarray  # [B]  r
    next_obs: np.ndarray  # [B, *obs_shape]  s' (the true final obs when the episode ended)
    terminated: np.ndarray  # [B] bool: s' is terminal, do not bootstrap (truncated is NOT here)


def valid_transitions(
    obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    next_obs: np.ndarray,
    terminated: np.ndarray,
    autoreset: np.ndarray,
) -> Transitions:
    """Keep the rows of one vector step that are real transitions of the MDP.

    Args:
        obs: [N, *obs_shape] observations the actions were chosen from.
        actions: [N] actions passed to ``envs.step``.
        rewards, next_obs, terminated: [N], [N, *obs_shape], [N] as returned by ``envs.step``.
        autoreset: [N] bool, ``terminated | truncated`` of the *previous* step: those sub-envs
            spent this step resetting (action ignored, reward 0, next_obs is a reset obs).

    Returns:
        :class:`Transitions` with the B <= N rows where ``autoreset`` is False. ``truncated``
        rows are kept with ``terminated=False``, so the TD target bootstraps from their
        ``next_obs``, the true last observation of the cut episode.
    """
    autoreset = np.asarray(autoreset, dtype=bool)
    if autoreset.shape != (len(obs),):
        raise ValueError(
            f"autoreset must be a bool array of shape [{len(obs)}] (one flag per sub-env, the "
            f"previous step's terminated | truncated), got shape {autoreset.shape}."
        )
    keep = ~autoreset
    return Transitions(
        obs=obs[keep],
        actions=np.asarray(actions)[keep],
        rewards=np.asarray(rewards, dtype=np.float32)[keep],
        next_obs=next_obs[keep],
        terminated=np.asarray(terminated, dtype=bool)[keep],
    )


# ----------------------------------------------------------------------------------------------
# Env state for exact resume
# ----------------------------------------------------------------------------------------------


def get_env_state(env: gym.Env | gym.vector.VectorEnv) -> dict[str, Any]:
    """Everything a checkpoint needs to continue an env mid-episode, as tensors and plain types.

    Covers classic-control envs (CartPole, Acrobot, MountainCar, Pendulum), whose dynamics state
    is ``env.unwrapped.state``: the physics state, the env's RNG, the time-limit counter, the
    episode-statistics accumulators and, for vector envs, which sub-envs reset next step.
    """
    if isinstance(env, gym.vector.VectorEnv):
        core = env.unwrapped
        if not isinstance(core, SyncVectorEnv):
            raise TypeError(
                f"get_env_state supports SyncVectorEnv only, got {type(core).__name__}; "
                f"build the env with labkit.rl.envs.make_vector_env."
            )
        return {
            "sub_envs": [_single_env_state(sub) for sub in core.envs],
            "autoreset": torch.as_tensor(core._autoreset_envs.copy()),
            "stats": _stats_state(env),
        }
    return {"sub_envs": [_single_env_state(env)], "stats": _stats_state(env)}


def set_env_state(env: gym.Env | gym.vector.VectorEnv, state: dict[str, Any]) -> None:
    """Restore what :func:`get_env_state` returned into an env built the same way."""
    if isinstance(env, gym.vector.VectorEnv):
        core = env.unwrapped
        if len(core.envs) != len(state["sub_envs"]):
            raise ValueError(
                f"Checkpoint holds {len(state['sub_envs'])} sub-envs but this vector env has "
                f"{len(core.envs)}; resume with the same env.num_envs as the original run."
            )
        for sub, sub_state in zip(core.envs, state["sub_envs"], strict=True):
            _set_single_env_state(sub, sub_state)
        core._autoreset_envs = state["autoreset"].numpy().copy()
    else:
        _set_single_env_state(env, state["sub_envs"][0])
    _set_stats_state(env, state["stats"])


def _single_env_state(env: gym.Env) -> dict[str, Any]:
    core = env.unwrapped
    if not hasattr(core, "state"):
        raise TypeError(
            f"{type(core).__name__} keeps no `state` attribute; exact resume supports "
            f"classic-control envs only. Resume without env state or checkpoint at episode ends."
        )
    physics = None if core.state is None else torch.from_numpy(np.array(core.state, np.float64))
    return {
        "physics": physics,
        "rng": core.np_random.bit_generator.state,  # nested dict of str / int
        "steps_beyond_terminated": getattr(core, "steps_beyond_terminated", None),
        "elapsed_steps": _find_attr(env, "_elapsed_steps"),  # TimeLimit's counter
    }


def _set_single_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    core = env.unwrapped
    core.state = None if state["physics"] is None else state["physics"].numpy().copy()
    core.np_random.bit_generator.state = state["rng"]
    if hasattr(core, "steps_beyond_terminated"):
        core.steps_beyond_terminated = state["steps_beyond_terminated"]
    layer = env
    while isinstance(layer, gym.Wrapper):
        if hasattr(layer, "_elapsed_steps"):
            layer._elapsed_steps = state["elapsed_steps"]
        layer = layer.env


def _find_attr(env: gym.Env, name: str) -> Any:
    layer = env
    while isinstance(layer, gym.Wrapper):
        if hasattr(layer, name):
            return getattr(layer, name)
        layer = layer.env
    return None


_STATS_FIELDS = ("episode_returns", "episode_lengths", "prev_dones", "episode_count")


def _stats_wrapper(env: Any) -> Any:
    layer = env
    while layer is not None:
        if isinstance(layer, (RecordEpisodeStatistics, VectorRecordEpisodeStatistics)):
            return layer
        layer = getattr(layer, "env", None)
    return None


def _stats_state(env: Any) -> dict[str, Any]:
    stats = _stats_wrapper(env)
    if stats is None:
        return {}
    state = {}
    for name in _STATS_FIELDS:
        if hasattr(stats, name):
            value = getattr(stats, name)
            if isinstance(value, np.ndarray):
                value = torch.as_tensor(value)
            elif isinstance(value, np.generic):  # numpy scalars are not weights_only-loadable
                value = value.item()
            state[name] = value
    return state


def _set_stats_state(env: Any, state: dict[str, Any]) -> None:
    stats = _stats_wrapper(env)
    for name, value in state.items():
        setattr(stats, name, value.numpy().copy() if isinstance(value, torch.Tensor) else value)
