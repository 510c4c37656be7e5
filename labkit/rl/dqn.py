"""DQN pieces (Mnih et al. 2015): ε-greedy exploration, target network, one update step.

The loop that uses them is ``labkit.rl.loops.train_dqn``; the targets and losses are
in ``labkit.rl.losses``. Explained in notebooks/30_rl_basics.py.
"""

from __future__ import annotations

import torch
from torch import nn

from labkit.rl.losses import td_loss, td_targets
from labkit.rl.replay import Batch


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Value moving linearly from ``start`` at t = 0 to ``end`` at t = ``duration``, then constant.

    DQN anneals ε this way: explore almost uniformly while Q is meaningless, then mostly exploit.
    """
    if duration <= 0:
        return end
    fraction = min(t / duration, 1.0)
    return start + fraction * (end - start)


def epsilon_greedy(
    q_values: torch.Tensor, epsilon: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """argmax_a Q(s, a) with probability 1 − ε, a uniformly random action with probability ε.

    Args:
        q_values: [E, N] action values for E envs (on any device).
        epsilon: exploration probability ε in [0, 1].
        generator: CPU generator for the coin flips and random actions. Both are always drawn,
            so the RNG advances by the same amount whatever ε is (reproducible resumes).

    Returns:
        [E] int64 actions on the CPU.
    """
    num_envs, num_actions = q_values.shape
    explore = torch.rand(num_envs, generator=generator) < epsilon  # [E] bool
    random_actions = torch.randint(0, num_actions, (num_envs,), generator=generator)  # [E]
    greedy_actions = q_values.argmax(dim=1).cpu()  # [E]
    return torch.where(explore, random_actions, greedy_actions)


@torch.no_grad()
def update_target(target: nn.Module, online: nn.Module, tau: float = 1.0) -> None:
    """θ⁻ ← τ θ + (1 − τ) θ⁻.

    τ = 1 is the hard copy of Mnih et al. 2015 (every C steps); τ ≪ 1 is Polyak averaging
    (Lillicrap et al. 2016), a target that trails the online network smoothly.
    """
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1] (1 = hard copy), got {tau}.")
    for p_target, p_online in zip(target.parameters(), online.parameters(), strict=True):
        p_target.lerp_(p_online, tau)  # p_target + τ (p_online − p_target)


def dqn_update(
    q_net: nn.Module,
    target_net: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    gamma: float,
    double: bool = True,
    loss_kind: str = "huber",
    max_grad_norm: float | None = 10.0,
) -> dict[str, float]:
    """One gradient step on the TD loss of a replay minibatch.

    Args:
        q_net: online network Q(·; θ), observations [B, obs_dim] -> [B, N].
        target_net: Q(·; θ⁻); ``None`` bootstraps from the online network itself (the
            "no target network" failure mode: the target moves with every step).
        batch: a :class:`~labkit.rl.replay.Batch` of B transitions.
        double: Double DQN targets (van Hasselt et al. 2016).
        max_grad_norm: clip the global gradient norm to this value (``None``: no clipping).

    Returns:
        ``{"td_loss", "q_values" (mean Q(s, a) of the batch), "grad_norm" (before clipping)}``.
    """
    q_all = q_net(batch.obs)  # [B, N]
    q_taken = q_all.gather(1, batch.actions.unsqueeze(1)).squeeze(1)  # [B] Q(s, a; θ)
    with torch.no_grad():
        bootstrap_net = target_net if target_net is not None else q_net
        next_q_target = bootstrap_net(batch.next_obs)  # [B, N]
        next_q_online = q_net(batch.next_obs) if double else None
        target = td_targets(batch.rewards, next_q_target, batch.terminated, gamma, next_q_online)
    loss = td_loss(q_taken, target, kind=loss_kind)

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = _clip_grad_norm(q_net.parameters(), max_grad_norm)
    optimizer.step()
    return {"td_loss": loss.item(), "q_values": q_taken.mean().item(), "grad_norm": grad_norm}


def _clip_grad_norm(parameters, max_norm: float | None) -> float:
    """Global gradient L2 norm before clipping; clips in place when ``max_norm`` is set."""
    limit = float("inf") if max_norm is None else max_norm
    return torch.nn.utils.clip_grad_norm_(list(parameters), limit).item()
