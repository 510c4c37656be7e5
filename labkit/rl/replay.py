"""Experience replay (Lin 1992; used by DQN, Mnih et al. 2015): a ring buffer of transitions.

Sampling old transitions uniformly breaks the correlation between consecutive updates and lets
each transition be learned from many times. Storage is preallocated so that adding is an index
write, and the buffer's ``state_dict`` makes checkpoints resume exactly.
Explained in notebooks/30_rl_basics.py.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """A sampled minibatch; B = batch size."""

    obs: torch.Tensor  # [B, *obs_shape]
    actions: torch.Tensor  # [B] int64
    rewards: torch.Tensor  # [B] float32
    next_obs: torch.Tensor  # [B, *obs_shape]
    terminated: torch.Tensor  # [B] float32, 1.0 where next_obs is terminal (no bootstrap)


class ReplayBuffer:
    """Fixed-capacity FIFO store of (s, a, r, s', terminated); the oldest rows are overwritten.

    Args:
        capacity: number of transitions kept. A capacity close to the batch size turns replay
            off in effect (each update sees only the newest, correlated transitions).
        obs_shape: shape of one observation, e.g. ``(4,)`` for CartPole.
        device: where the storage lives and where sampled batches are returned.
        obs_dtype: storage dtype of observations (``torch.uint8`` saves 4x for pixels).
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        device: str | torch.device = "cpu",
        obs_dtype: torch.dtype = torch.float32,
    ):
        if capacity < 1:
            raise ValueError(f"ReplayBuffer capacity must be >= 1, got {capacity}.")
        self.capacity = int(capacity)
        self.obs_shape = tuple(obs_shape)
        self.device = torch.device(device)
        self.obs = torch.zeros((capacity, *self.obs_shape), dtype=obs_dtype, device=self.device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.pos = 0  # next row to write
        self.size = 0  # rows filled so far (<= capacity)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Append a batch of B transitions (NumPy arrays or tensors), wrapping around at capacity.

        Args:
            obs, next_obs: [B, *obs_shape].
            actions, rewards, terminated: [B].
        """
        obs = self._as_tensor(obs, self.obs.dtype)
        batch = obs.shape[0]
        if obs.shape[1:] != self.obs_shape:
            raise ValueError(
                f"ReplayBuffer.add expected obs of shape [B, {', '.join(map(str, self.obs_shape))}]"
                f", got {list(obs.shape)}; pass a batch (add a leading dim for a single step)."
            )
        if batch > self.capacity:
            raise ValueError(
                f"Cannot add {batch} transitions to a buffer of capacity {self.capacity}; "
                f"raise replay capacity above the number of parallel envs."
            )
        if batch == 0:  # every sub-env was autoresetting: nothing to store
            return
        rows = (self.pos + torch.arange(batch, device=self.device)) % self.capacity  # ring indices
        self.obs[rows] = obs
        self.next_obs[rows] = self._as_tensor(next_obs, self.obs.dtype)
        self.actions[rows] = self._as_tensor(actions, torch.int64)
        self.rewards[rows] = self._as_tensor(rewards, torch.float32)
        self.terminated[rows] = self._as_tensor(terminated, torch.float32)
        self.pos = (self.pos + batch) % self.capacity
        self.size = min(self.size + batch, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Draw ``batch_size`` transitions uniformly, with replacement.

        Args:
            generator: a CPU ``torch.Generator`` (for reproducible sampling independent of the
                global RNG); ``None`` uses the global one.
        """
        if self.size == 0:
            raise RuntimeError("Cannot sample from an empty ReplayBuffer; add transitions first.")
        idx = torch.randint(0, self.size, (batch_size,), generator=generator).to(self.device)
        return Batch(
            obs=self.obs[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_obs=self.next_obs[idx],
            terminated=self.terminated[idx],
        )

    def state_dict(self) -> dict[str, Any]:
        """Filled rows and write position, as CPU tensors and ints (``weights_only``-loadable)."""
        n = self.size
        return {
            "capacity": self.capacity,
            "pos": self.pos,
            "size": n,
            "obs": self.obs[:n].cpu(),
            "next_obs": self.next_obs[:n].cpu(),
            "actions": self.actions[:n].cpu(),
            "rewards": self.rewards[:n].cpu(),
            "terminated": self.terminated[:n].cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity or tuple(state["obs"].shape[1:]) != self.obs_shape:
            raise ValueError(
                f"Replay state has capacity {state['capacity']} and obs shape "
                f"{tuple(state['obs'].shape[1:])}; this buffer has {self.capacity} and "
                f"{self.obs_shape}. Resume with the same replay capacity and env."
            )
        n = state["size"]
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(self, name)[:n] = state[name].to(self.device)
        self.pos, self.size = state["pos"], n

    def _as_tensor(self, x, dtype: torch.dtype) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        return torch.as_tensor(x).to(device=self.device, dtype=dtype)
