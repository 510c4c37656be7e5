"""TD targets, returns, advantages and the DQN / PG building blocks, by hand and by slow loops."""

import math

import pytest
import torch
from torch import nn

from labkit.rl.dqn import dqn_update, epsilon_greedy, linear_schedule, update_target
from labkit.rl.losses import (
    discounted_returns,
    entropy_bonus,
    normalize_advantages,
    reinforce_loss,
    td_loss,
    td_targets,
)
from labkit.rl.networks import ActorCritic, QNetwork
from labkit.rl.pg import Episode, reinforce_update
from labkit.rl.replay import Batch


def _slow_returns(rewards, gamma, dones):
    """Reference: for each t, sum γ^k r_{t+k} until (and including) the end of its episode."""
    out = []
    for t in range(len(rewards)):
        total, discount = 0.0, 1.0
        for k in range(t, len(rewards)):
            total += discount * rewards[k]
            discount *= gamma
            if dones[k]:
                break
        out.append(total)
    return out


def test_discounted_returns_single_episode_by_hand():
    # G_2 = 1, G_1 = 2 + 0.5 * 1 = 2.5, G_0 = 3 + 0.5 * 2.5 = 4.25
    g = discounted_returns(torch.tensor([3.0, 2.0, 1.0]), gamma=0.5)
    assert g.tolist() == [4.25, 2.5, 1.0]


def test_discounted_returns_matches_python_loop_with_episode_ends():
    torch.manual_seed(0)
    rewards = torch.randn(40)
    dones = torch.rand(40) < 0.2
    dones[-1] = False  # an unfinished last episode is fine too
    expected = _slow_returns(rewards.tolist(), 0.9, dones.tolist())
    torch.testing.assert_close(discounted_returns(rewards, 0.9, dones), torch.tensor(expected))


def test_discounted_returns_resets_at_done_and_handles_parallel_envs():
    rewards = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])  # [T=3, E=2]
    dones = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])  # env 1 ends after step 0
    g = discounted_returns(rewards, 0.5, dones)
    # env 0: 1.75, 1.5, 1; env 1: episode {0} -> 1, episode {1, 2} -> 1.5, 1
    assert g.tolist() == [[1.75, 1.0], [1.5, 1.5], [1.0, 1.0]]
    with pytest.raises(ValueError, match="shape"):
        discounted_returns(rewards, 0.5, dones[:2])


def test_td_targets_terminated_vs_truncated_by_hand():
    # Both transitions: r = 1, max_a' Q(s', a') = max(2, 4) = 4, γ = 0.9.
    # Row 0 TERMINATED: s' is terminal, no future reward -> y = 1.
    # Row 1 TRUNCATED (time limit), passed as terminated = 0: s' is an ordinary state whose value
    # is still owed -> y = 1 + 0.9 * 4 = 4.6. Treating it as terminal would teach Q that the
    # pole falls at the time limit, a bias towards 1 near the end of every long episode.
    rewards = torch.tensor([1.0, 1.0])
    next_q = torch.tensor([[2.0, 4.0], [2.0, 4.0]])
    y = td_targets(rewards, next_q, terminated=torch.tensor([1.0, 0.0]), gamma=0.9)
    torch.testing.assert_close(y, torch.tensor([1.0, 4.6]))


def test_double_dqn_target_by_hand():
    # Online net prefers action 0 at s' (5 > 1); target net scores action 0 as 2 and action 1 as 3.
    # DQN:        y = 0 + 0.5 * max(2, 3)            = 1.5
    # Double DQN: y = 0 + 0.5 * Q_target(s', a = 0) = 1.0 (the online argmax, the target's value)
    next_q_target, next_q_online = torch.tensor([[2.0, 3.0]]), torch.tensor([[5.0, 1.0]])
    zero = torch.tensor([0.0])
    assert td_targets(zero, next_q_target, zero, 0.5).item() == 1.5
    assert td_targets(zero, next_q_target, zero, 0.5, next_q_online).item() == 1.0


def test_td_targets_carry_no_gradient_and_td_loss_kinds():
    next_q = torch.randn(4, 2, requires_grad=True)
    y = td_targets(torch.ones(4), next_q, torch.zeros(4), 0.99)
    assert not y.requires_grad
    q, target = torch.tensor([0.0, 0.0]), torch.tensor([0.5, 3.0])
    # Huber (δ = 1): 0.5 * 0.5² = 0.125 and 3 − 0.5 = 2.5 -> mean 1.3125; MSE: (0.25 + 9) / 2
    assert td_loss(q, target, "huber").item() == pytest.approx(1.3125)
    assert td_loss(q, target, "mse").item() == pytest.approx(4.625)
    with pytest.raises(ValueError, match="huber"):
        td_loss(q, target, "l1")


def test_normalize_advantages_mean_zero_std_one():
    adv = normalize_advantages(torch.tensor([1.0, 2.0, 3.0, 10.0]) * 100)
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert adv.std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    assert normalize_advantages(torch.tensor([5.0])).tolist() == [0.0]


def test_reinforce_loss_gradient_points_along_advantage():
    # d/dθ of −mean(log π · A): pushes up log π of positive-advantage actions only.
    log_probs = torch.tensor([-1.0, -2.0], requires_grad=True)
    reinforce_loss(log_probs, torch.tensor([2.0, -1.0])).backward()
    assert log_probs.grad.tolist() == [-1.0, 0.5]


def test_entropy_bonus_uniform_is_log_n():
    assert entropy_bonus(torch.zeros(3, 4)).item() == pytest.approx(math.log(4))
    assert entropy_bonus(torch.tensor([[100.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_linear_schedule_and_epsilon_greedy():
    assert linear_schedule(1.0, 0.1, 100, 0) == 1.0
    assert linear_schedule(1.0, 0.1, 100, 50) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 100, 1000) == pytest.approx(0.1)
    q = torch.tensor([[0.0, 1.0, 0.0]]).repeat(1000, 1)
    assert epsilon_greedy(q, 0.0).eq(1).all()
    actions = epsilon_greedy(q, 1.0, torch.Generator().manual_seed(0))
    assert set(actions.tolist()) == {0, 1, 2}


def test_target_update_hard_and_polyak():
    online, target = nn.Linear(2, 1), nn.Linear(2, 1)
    nn.init.constant_(online.weight, 1.0)
    nn.init.constant_(target.weight, 0.0)
    update_target(target, online, tau=0.1)  # 0.9 * 0 + 0.1 * 1
    torch.testing.assert_close(target.weight, torch.full((1, 2), 0.1))
    update_target(target, online, tau=1.0)
    torch.testing.assert_close(target.weight, online.weight)
    with pytest.raises(ValueError, match="tau"):
        update_target(target, online, tau=0.0)


def test_dqn_update_reduces_td_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    q_net = QNetwork(4, 2, (32,))
    optimizer = torch.optim.Adam(q_net.parameters(), lr=1e-2)
    batch = Batch(torch.randn(64, 4), torch.randint(0, 2, (64,)), torch.ones(64),
                  torch.randn(64, 4), torch.ones(64))  # fmt: skip  # all terminal: y = 1
    first = dqn_update(q_net, None, optimizer, batch, 0.99)
    for _ in range(100):
        last = dqn_update(q_net, None, optimizer, batch, 0.99)
    assert last["td_loss"] < 0.1 * first["td_loss"]
    assert last["q_values"] == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("baseline", ["value", "mean", "none"])
def test_reinforce_update_runs_for_every_baseline(baseline):
    torch.manual_seed(0)
    model = ActorCritic(4, 2, (16,), shared=baseline == "mean")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    episode = Episode(torch.randn(5, 4), torch.randint(0, 2, (5,)), torch.ones(5),
                      torch.randn(4), truncated=True)  # fmt: skip
    metrics = reinforce_update(model, optimizer, [episode, episode], 0.99, baseline)
    assert metrics["mean_return"] == 5.0 and metrics["grad_norm"] > 0
    assert (metrics["value_loss"] > 0) == (baseline == "value")
    with pytest.raises(ValueError, match="baseline"):
        reinforce_update(model, optimizer, [episode], 0.99, "median")
