"""Small MLPs for vector observations: a Q-network, a policy, a value function, an actor-critic.

Shapes: observations [B, obs_dim] float32; N = number of discrete actions.
Explained in notebooks/30_rl_basics.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation=nn.ReLU) -> nn.Sequential:
    """``Linear -> activation`` for each hidden width, then a final ``Linear`` (no activation)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), activation()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class QNetwork(nn.Module):
    """Q(s, ·): observations [B, obs_dim] -> action values [B, N] (one head per action, as DQN)."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: Sequence[int] = (128, 128)):
        super().__init__()
        self.net = mlp(obs_dim, hidden, num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class PolicyNetwork(nn.Module):
    """π(·|s): observations [B, obs_dim] -> categorical logits [B, N]."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = mlp(obs_dim, hidden, num_actions, activation=nn.Tanh)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class ValueNetwork(nn.Module):
    """V(s): observations [B, obs_dim] -> state values [B]."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 1, activation=nn.Tanh)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)  # [B, 1] -> [B]


class ActorCritic(nn.Module):
    """Policy logits and state value, from one shared trunk or from two separate MLPs.

    ``shared=False`` (the default) keeps the value loss from pulling on the policy's features,
    which is the safer choice for small problems; ``shared=True`` halves the parameters.

    forward: observations [B, obs_dim] -> (logits [B, N], values [B]).
    """

    def __init__(
        self, obs_dim: int, num_actions: int, hidden: Sequence[int] = (64, 64), shared=False
    ):
        super().__init__()
        self.shared = shared
        if shared:
            # hidden layers with an activation after the last one too: features [B, hidden[-1]]
            self.trunk = nn.Sequential(*mlp(obs_dim, hidden[:-1], hidden[-1], nn.Tanh), nn.Tanh())
            self.policy_head = nn.Linear(hidden[-1], num_actions)
            self.value_head = nn.Linear(hidden[-1], 1)
        else:
            self.policy = PolicyNetwork(obs_dim, num_actions, hidden)
            self.value = ValueNetwork(obs_dim, hidden)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared:
            features = self.trunk(obs)  # [B, hidden[-1]]
            return self.policy_head(features), self.value_head(features).squeeze(-1)
        return self.policy(obs), self.value(obs)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Policy logits only [B, N] (acting does not need the value)."""
        if self.shared:
            return self.policy_head(self.trunk(obs))
        return self.policy(obs)
