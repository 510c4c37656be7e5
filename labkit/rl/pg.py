"""REINFORCE with baseline (Williams 1992; Sutton & Barto 2018, section 13.4).

Collect whole episodes with the stochastic policy, compute the returns-to-go G_t, subtract a
baseline b(s_t) to get advantages A_t = G_t − b(s_t), and step along ∇ mean_t[log π(a_t|s_t) A_t].
The baseline leaves the gradient unbiased (it does not depend on a_t) but shrinks its variance.
The loop that uses these pieces is ``labkit.rl.loops.train_pg``.
Explained in notebooks/30_rl_basics.py.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch

from labkit.rl.losses import (
    discounted_returns,
    entropy_bonus,
    normalize_advantages,
    reinforce_loss,
    value_loss,
)
from labkit.rl.networks import ActorCritic

BASELINES = ("value", "mean", "none")


class Episode(NamedTuple):
    """One finished episode of T steps."""

    obs: torch.Tensor  # [T, obs_dim] s_0 .. s_{T-1}
    actions: torch.Tensor  # [T] int64
    rewards: torch.Tensor  # [T] float32, as returned by the env (unscaled)
    final_obs: torch.Tensor  # [obs_dim] s_T, needed to bootstrap a truncated episode
    truncated: bool  # cut by the time limit (s_T is not terminal)


def sample_actions(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw a ~ π(·|s) = softmax(logits): logits [E, N] -> actions [E] int64 (CPU generator)."""
    probs = torch.softmax(logits.detach().cpu(), dim=-1)  # [E, N]
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def collect_episode(
    env: gym.Env, model: ActorCritic, generator: torch.Generator, device: torch.device
) -> Episode:
    """Run one episode of the stochastic policy from ``env.reset()`` (no seed: the env's RNG)."""
    obs, _ = env.reset()
    observations, actions, rewards = [], [], []
    while True:
        obs_t = torch.as_tensor(obs, dtype=torch.float32)
        action = sample_actions(model.logits(obs_t.unsqueeze(0).to(device)), generator)[0]
        next_obs, reward, terminated, truncated, _ = env.step(action.item())
        observations.append(obs_t)
        actions.append(action)
        rewards.append(float(reward))
        obs = next_obs
        if terminated or truncated:
            break
    return Episode(
        obs=torch.stack(observations),
        actions=torch.stack(actions),
        rewards=torch.tensor(rewards, dtype=torch.float32),
        final_obs=torch.as_tensor(obs, dtype=torch.float32),
        truncated=bool(truncated and not terminated),
    )


def reinforce_update(
    model: ActorCritic,
    optimizer: torch.optim.Optimizer,
    episodes: list[Episode],
    gamma: float,
    baseline: str = "value",
    normalize: bool = True,
    entropy_coef: float = 0.0,
    value_coef: float = 0.5,
    max_grad_norm: float | None = None,
    reward_scale: float = 1.0,
) -> dict[str, float]:
    """One gradient step of REINFORCE with baseline on a batch of whole episodes.

    Args:
        episodes: finished episodes, laid end to end (T = total steps).
        baseline: ``"value"`` learned V(s_t) (trained by MSE on G_t), ``"mean"`` the batch mean
            of G_t, ``"none"`` plain REINFORCE (the high-variance failure mode).
        normalize: scale advantages to mean 0, std 1 (:func:`normalize_advantages`).
        entropy_coef: weight of the entropy bonus subtracted from the loss.
        value_coef: weight of the value loss (one optimizer serves both heads).
        reward_scale: multiply rewards before computing returns (×100 is a failure mode: without
            normalisation the step size grows 100×).

    Returns:
        ``policy_loss``, ``value_loss``, ``entropy``, ``grad_norm`` (before clipping),
        ``mean_return`` (undiscounted, unscaled, over the episodes).
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}.")
    device = next(model.parameters()).device
    obs = torch.cat([ep.obs for ep in episodes]).to(device)  # [T, obs_dim]
    actions = torch.cat([ep.actions for ep in episodes]).to(device)  # [T]
    rewards = torch.cat([ep.rewards for ep in episodes]).to(device) * reward_scale  # [T]
    dones = torch.cat([_last_step_mask(len(ep.rewards)) for ep in episodes]).to(device)  # [T]

    logits, values = model(obs)  # [T, N], [T]
    if baseline == "value":
        # A truncated episode still owes γ V(s_T): fold it into its last reward so that
        # G_{T-1} = r_{T-1} + γ V(s_T) instead of pretending s_T was terminal.
        rewards = rewards + gamma * _truncation_values(model, episodes, device)
    returns = discounted_returns(rewards, gamma, dones)  # [T] G_t

    if baseline == "value":
        advantages = returns - values.detach()
    elif baseline == "mean":
        advantages = returns - returns.mean()
    else:
        advantages = returns
    if normalize:
        advantages = normalize_advantages(advantages)

    log_probs = torch.log_softmax(logits, dim=-1).gather(1, actions.unsqueeze(1)).squeeze(1)
    policy_loss = reinforce_loss(log_probs, advantages)
    entropy = entropy_bonus(logits)
    loss = policy_loss - entropy_coef * entropy
    v_loss = value_loss(values, returns) if baseline == "value" else torch.zeros((), device=device)
    loss = loss + value_coef * v_loss

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    limit = float("inf") if max_grad_norm is None else max_grad_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), limit).item()
    optimizer.step()
    return {
        "policy_loss": policy_loss.item(),
        "value_loss": v_loss.item(),
        "entropy": entropy.item(),
        "grad_norm": grad_norm,
        "mean_return": float(np.mean([ep.rewards.sum().item() for ep in episodes])),
    }


def _last_step_mask(length: int) -> torch.Tensor:
    """[length] float mask with 1 at the episode's last step (its ``done``)."""
    mask = torch.zeros(length)
    mask[-1] = 1.0
    return mask


@torch.no_grad()
def _truncation_values(model: ActorCritic, episodes: list[Episode], device) -> torch.Tensor:
    """[T] with V(s_T) at the last step of each truncated episode and 0 elsewhere."""
    parts = []
    for ep in episodes:
        part = torch.zeros(len(ep.rewards), device=device)
        if ep.truncated:
            part[-1] = model(ep.final_obs.unsqueeze(0).to(device))[1][0]
        parts.append(part)
    return torch.cat(parts)
