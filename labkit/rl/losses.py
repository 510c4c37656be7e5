"""RL targets and losses as pure functions, each with its equation.

Notation: B = batch of transitions, T = time steps of a rollout, N = number of actions.
``terminated`` means the next state is terminal (no future reward); a time-limit truncation is
NOT terminal and must be passed as ``terminated = 0`` (see labkit/rl/envs.py).
Explained in notebooks/30_rl_basics.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Value-based: DQN
# ----------------------------------------------------------------------------------------------


def td_targets(
    rewards: torch.Tensor,
    next_q_target: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """One-step TD targets y for Q-learning, computed without gradient.

    DQN (Mnih et al. 2015, Methods):
        y = r + γ (1 − terminated) max_a' Q(s', a'; θ⁻)
    Double DQN (van Hasselt et al. 2016, eq. 4), when ``next_q_online`` is given: the online
    network picks the action, the target network scores it, which removes max's upward bias:
        y = r + γ (1 − terminated) Q(s', argmax_a' Q(s', a'; θ); θ⁻)

    Args:
        rewards: [B] r.
        next_q_target: [B, N] Q(s', ·; θ⁻) from the target network.
        terminated: [B] 1/True where s' is terminal. Truncated episodes must be 0 here: their s'
            is an ordinary state and its value is still owed.
        gamma: discount γ in [0, 1].
        next_q_online: [B, N] Q(s', ·; θ) from the online network, for Double DQN.

    Returns:
        [B] targets y.
    """
    if next_q_target.dim() != 2 or next_q_target.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"next_q_target must be [B, N] with B = len(rewards) = {rewards.shape[0]}, "
            f"got {list(next_q_target.shape)}."
        )
    with torch.no_grad():
        if next_q_online is None:
            next_value = next_q_target.max(dim=1).values  # [B] max_a' Q(s', a'; θ⁻)
        else:
            best = next_q_online.argmax(dim=1, keepdim=True)  # [B, 1] argmax_a' Q(s', a'; θ)
            next_value = next_q_target.gather(1, best).squeeze(1)  # [B]
        not_terminal = 1.0 - terminated.float()
        return rewards.float() + gamma * not_terminal * next_value


def td_loss(q: torch.Tensor, target: torch.Tensor, kind: str = "huber") -> torch.Tensor:
    """Mean TD loss between Q(s, a) [B] and targets y [B] (targets are treated as constants).

    ``"huber"`` (smooth L1, δ = 1) is what Mnih et al. 2015 call clipping the error term to
    [−1, 1]: gradients stay bounded when a target jumps. ``"mse"`` is the plain squared error.
    """
    target = target.detach()
    if kind == "huber":
        return F.smooth_l1_loss(q, target)
    if kind == "mse":
        return F.mse_loss(q, target)
    raise ValueError(f"td_loss kind must be 'huber' or 'mse', got {kind!r}.")


# ----------------------------------------------------------------------------------------------
# Policy gradient: REINFORCE with baseline
# ----------------------------------------------------------------------------------------------


def discounted_returns(
    rewards: torch.Tensor, gamma: float, dones: torch.Tensor | None = None
) -> torch.Tensor:
    """Returns-to-go G_t = r_t + γ (1 − done_t) G_{t+1} (Sutton & Barto 2018, eq. 3.9).

    Computed backwards in one pass. ``dones[t]`` marks that an episode ended with reward r_t,
    so several episodes laid end to end do not leak return into each other.

    Args:
        rewards: [T] or [T, E] (E parallel envs), r_t.
        gamma: discount γ.
        dones: same shape as ``rewards``, 1/True at the last step of each episode. ``None``
            treats the whole sequence as one episode ending at T − 1.

    Returns:
        G with the shape of ``rewards``, float32.
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if dones is None:
        dones = torch.zeros_like(rewards)
    dones = torch.as_tensor(dones, dtype=torch.float32, device=rewards.device)
    if dones.shape != rewards.shape:
        raise ValueError(
            f"dones must have the shape of rewards {list(rewards.shape)}, got {list(dones.shape)}."
        )
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])  # G_{t+1}; zero after the last step
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * (1.0 - dones[t]) * running
        returns[t] = running
    return returns


def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(A − mean A) / (std A + ε): mean 0 and std 1 over the batch (population std).

    Rescales the gradient to a size independent of the reward scale, which makes one learning
    rate work across episodes of length 10 and 500. A single element returns 0.
    """
    if advantages.numel() < 2:
        return advantages - advantages.mean()
    return (advantages - advantages.mean()) / (advantages.std(correction=0) + eps)


def reinforce_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Policy-gradient surrogate −mean_t[ log π(a_t|s_t) · A_t ] (Williams 1992).

    Its gradient is the REINFORCE-with-baseline update of Sutton & Barto 2018, eq. 13.11, with
    A_t = G_t − b(s_t); the γ^t factor of the textbook is dropped, as in common practice.
    The advantages are constants: the baseline must not receive policy gradient.

    Args:
        log_probs: [T] log π(a_t|s_t) of the actions taken (carries the gradient).
        advantages: [T] A_t.
    """
    if log_probs.shape != advantages.shape:
        raise ValueError(
            f"log_probs {list(log_probs.shape)} and advantages {list(advantages.shape)} must "
            f"have the same shape [T]."
        )
    return -(log_probs * advantages.detach()).mean()


def value_loss(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """Mean squared error between V(s_t) [T] and the returns G_t [T] it regresses on (eq. 13.11)."""
    return F.mse_loss(values, returns.detach())


def entropy_bonus(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy H(π(·|s)) = −Σ_a π(a|s) log π(a|s) of categorical logits [B, N] -> scalar.

    Subtracting ``coef · entropy`` from the loss keeps the policy from collapsing onto one
    action before it has explored (Williams & Peng 1991; Mnih et al. 2016).
    """
    log_p = F.log_softmax(logits, dim=-1)  # [B, N]
    return -(log_p.exp() * log_p).sum(dim=-1).mean()
