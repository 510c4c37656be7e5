"""ReplayBuffer: ring wrap-around, sampling shapes, exact state round trip, loud errors."""

import io

import numpy as np
import pytest
import torch

from labkit.rl.replay import ReplayBuffer


def _add_range(buffer: ReplayBuffer, start: int, count: int) -> None:
    """Add transitions whose every field encodes its index i (obs = [i, i], reward = i)."""
    i = torch.arange(start, start + count, dtype=torch.float32)
    buffer.add(i[:, None].repeat(1, 2), i.long() % 3, i, i[:, None].repeat(1, 2) + 0.5, i % 2)


def test_ring_wraps_and_overwrites_oldest():
    buffer = ReplayBuffer(capacity=5, obs_shape=(2,))
    _add_range(buffer, 0, 3)
    assert len(buffer) == 3 and buffer.pos == 3
    _add_range(buffer, 3, 4)  # 3, 4 fill rows 3, 4; 5, 6 wrap onto rows 0, 1
    assert len(buffer) == 5 and buffer.pos == 2
    assert buffer.rewards.tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert buffer.obs[:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert buffer.next_obs[0].tolist() == [5.5, 5.5]


def test_sample_shapes_dtypes_and_consistency():
    buffer = ReplayBuffer(capacity=100, obs_shape=(2,))
    _add_range(buffer, 0, 40)
    batch = buffer.sample(32, generator=torch.Generator().manual_seed(0))
    assert batch.obs.shape == (32, 2) and batch.next_obs.shape == (32, 2)
    assert batch.actions.shape == (32,) and batch.actions.dtype == torch.int64
    assert batch.rewards.shape == (32,) and batch.terminated.dtype == torch.float32
    # Rows stay aligned: each sampled field encodes the same index.
    assert torch.equal(batch.obs[:, 0], batch.rewards)
    assert torch.equal(batch.next_obs[:, 0], batch.rewards + 0.5)
    assert batch.rewards.max() < 40  # never samples unfilled rows


def test_sample_is_reproducible_with_a_generator():
    buffer = ReplayBuffer(capacity=50, obs_shape=(2,))
    _add_range(buffer, 0, 50)
    a = buffer.sample(16, generator=torch.Generator().manual_seed(3))
    b = buffer.sample(16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.rewards, b.rewards)


def test_add_accepts_numpy_and_empty_batches():
    buffer = ReplayBuffer(capacity=4, obs_shape=(3,))
    buffer.add(np.ones((2, 3), np.float32), np.array([0, 1]), np.ones(2), np.ones((2, 3)),
               np.array([False, True]))  # fmt: skip
    buffer.add(np.ones((0, 3)), np.zeros(0), np.zeros(0), np.ones((0, 3)), np.zeros(0, bool))
    assert len(buffer) == 2 and buffer.terminated[:2].tolist() == [0.0, 1.0]


def test_state_dict_round_trip_through_weights_only_load():
    buffer = ReplayBuffer(capacity=6, obs_shape=(2,))
    _add_range(buffer, 0, 5)
    _add_range(buffer, 5, 4)  # wrapped: pos 3
    blob = io.BytesIO()
    torch.save(buffer.state_dict(), blob)
    blob.seek(0)
    restored = ReplayBuffer(capacity=6, obs_shape=(2,))
    restored.load_state_dict(torch.load(blob, weights_only=True))
    assert (restored.pos, len(restored)) == (buffer.pos, len(buffer))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for x, y in zip(buffer.sample(10, g1), restored.sample(10, g2), strict=True):
        assert torch.equal(x, y)
    _add_range(buffer, 9, 1)
    _add_range(restored, 9, 1)  # continues writing at the same row
    assert torch.equal(buffer.rewards, restored.rewards)


def test_loud_errors():
    buffer = ReplayBuffer(capacity=4, obs_shape=(2,))
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample(1)
    with pytest.raises(ValueError, match="obs of shape"):
        buffer.add(
            torch.zeros(2, 3), torch.zeros(2), torch.zeros(2), torch.zeros(2, 3), torch.zeros(2)
        )
    with pytest.raises(ValueError, match="capacity"):
        _add_range(buffer, 0, 5)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=8, obs_shape=(2,)).load_state_dict(buffer.state_dict())
