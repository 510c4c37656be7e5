"""Vector-env autoreset: only real MDP transitions are kept; truncation is not termination."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from labkit.rl.envs import (
    get_env_state,
    make_env,
    make_vector_env,
    set_env_state,
    valid_transitions,
)
from labkit.rl.plumbing import evaluate_policy, finished_episodes


def test_valid_transitions_hand_built_scenario():
    # Two envs, obs are 1-d so every value names its (env, time): env 0 -> 0x, env 1 -> 1x.
    # t=0: both step normally.                       -> keep both
    # t=1: env 0 is TRUNCATED (time limit).          -> keep, terminated=False, next_obs = 02
    # t=2: env 0 autoresets (next_obs 09 = reset),   -> drop env 0; env 1 TERMINATES -> keep, True
    # t=3: env 0 steps from its reset obs 09 -> 03   -> keep; env 1 autoresets -> drop env 1
    obs = [np.array([[0.0], [10.0]]), np.array([[1.0], [11.0]]), np.array([[2.0], [12.0]])]
    obs += [np.array([[9.0], [13.0]]), np.array([[3.0], [19.0]])]
    terminated = [[False, False], [False, False], [False, True], [False, False]]
    truncated = [[False, False], [True, False], [False, False], [False, False]]
    rewards = [[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]

    kept = []
    autoreset = np.zeros(2, dtype=bool)
    for t in range(4):
        term, trunc = np.array(terminated[t]), np.array(truncated[t])
        batch = valid_transitions(
            obs[t], np.array([0, 1]), np.array(rewards[t]), obs[t + 1], term, autoreset
        )
        kept += list(
            zip(batch.obs[:, 0], batch.next_obs[:, 0], batch.terminated, batch.rewards, strict=True)
        )
        autoreset = term | trunc

    assert kept == [
        (0.0, 1.0, False, 1.0),
        (10.0, 11.0, False, 1.0),
        (1.0, 2.0, False, 1.0),  # truncated: kept, bootstraps from the true final obs 2
        (11.0, 12.0, False, 1.0),
        (12.0, 13.0, True, 1.0),  # terminated: kept, no bootstrap
        (9.0, 3.0, False, 1.0),  # the new episode of env 0 starts from its reset obs
    ]  # the autoreset rows (2 -> 9 at t=2, 13 -> 19 at t=3) are gone


def test_valid_transitions_rejects_wrong_mask_shape():
    with pytest.raises(ValueError, match="autoreset"):
        valid_transitions(np.zeros((2, 4)), np.zeros(2), np.zeros(2), np.zeros((2, 4)),
                          np.zeros(2, bool), np.zeros(3, bool))  # fmt: skip


def _cartpole_successor(obs: np.ndarray, action: int) -> tuple[np.ndarray, bool]:
    """Slow reference: put a fresh CartPole into state ``obs`` and apply ``action``."""
    sim = gym.make("CartPole-v1").unwrapped
    sim.reset(seed=0)
    sim.state = obs.astype(np.float64)
    next_obs, _, terminated, _, _ = sim.step(int(action))
    return next_obs, terminated


def _collect(max_episode_steps: int, num_envs: int, steps: int, seed: int = 0):
    envs = make_vector_env("CartPole-v1", num_envs, seed, max_episode_steps)
    obs, _ = envs.reset()
    autoreset = np.zeros(num_envs, dtype=bool)
    stored, episodes, dones = [], [], {"terminated": 0, "truncated": 0}
    for _ in range(steps):
        actions = envs.action_space.sample()
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        stored.append(valid_transitions(obs, actions, rewards, next_obs, terminated, autoreset))
        episodes += finished_episodes(info)
        dones["terminated"] += int(terminated.sum())
        dones["truncated"] += int((truncated & ~terminated).sum())
        autoreset = terminated | truncated
        obs = next_obs
    envs.close()
    return stored, episodes, dones


def test_real_vector_env_truncation_keeps_final_obs_and_drops_autoreset_step():
    # A time limit of 5 forces truncation: a random CartPole policy never falls within 5 steps.
    stored, episodes, dones = _collect(max_episode_steps=5, num_envs=3, steps=30)
    assert dones["truncated"] > 0 and dones["terminated"] == 0
    # Each env cycles through 5 real steps and 1 reset step: 30 steps = 5 episodes per env,
    # 25 stored transitions per env, and not one of the 5 reset steps.
    assert len(episodes) == 15 and all(length == 5 for _, length in episodes)
    assert sum(len(b.obs) for b in stored) == 3 * 25
    for batch in stored:
        assert not batch.terminated.any()  # truncation is never stored as terminal
        for o, a, next_o in zip(batch.obs, batch.actions, batch.next_obs, strict=True):
            expected, _ = _cartpole_successor(o, a)
            # If an autoreset row slipped in, next_obs would be a reset state, not the physics.
            np.testing.assert_allclose(next_o, expected, atol=1e-5)


def test_real_vector_env_terminated_and_truncated_told_apart():
    # Limit 12: random play ends some episodes by falling (terminated), others by the limit.
    stored, episodes, dones = _collect(max_episode_steps=12, num_envs=4, steps=120, seed=3)
    assert dones["terminated"] > 0 and dones["truncated"] > 0
    n_terminal = 0
    for batch in stored:
        for o, a, next_o, term in zip(*batch[:2], batch.next_obs, batch.terminated, strict=True):
            expected, sim_terminated = _cartpole_successor(o, a)
            np.testing.assert_allclose(next_o, expected, atol=1e-5)
            assert term == sim_terminated  # terminal exactly where the physics says so
            n_terminal += int(term)
    assert n_terminal == dones["terminated"]
    assert sum(len(b.obs) for b in stored) >= sum(length for _, length in episodes)


def test_make_env_is_reproducible():
    a, b = make_env("CartPole-v1", seed=7), make_env("CartPole-v1", seed=7)
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])
    assert a.action_space.sample() == b.action_space.sample()


def test_env_state_round_trip_continues_identically():
    envs = make_vector_env("CartPole-v1", 2, seed=0, max_episode_steps=7)
    envs.reset()
    rng = np.random.default_rng(0)
    for _ in range(9):  # mid-episode, one env just truncated
        envs.step(rng.integers(0, 2, size=2))
    state = get_env_state(envs)
    actions = rng.integers(0, 2, size=(20, 2))
    expected = [envs.step(a)[0] for a in actions]

    clone = make_vector_env("CartPole-v1", 2, seed=123, max_episode_steps=7)
    clone.reset()
    set_env_state(clone, state)
    for a, want in zip(actions, expected, strict=True):
        np.testing.assert_array_equal(clone.step(a)[0], want)


def test_evaluate_policy_random_cartpole_is_about_22():
    returns = evaluate_policy(
        lambda obs: torch.randint(0, 2, (len(obs),)), "CartPole-v1", 20, seed=0
    )
    assert returns.shape == (20,)
    assert 10 < returns.mean() < 40
