"""Wrong answers to the exercises of notebooks/30_rl_basics.py: one per exercise, each a
mistake a learner could make (tests/test_exercise.py runs every exercise with it and expects ✗)."""

import torch


def _returns_ignoring_dones(rewards, gamma, dones):
    out, running = torch.zeros_like(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def _td_ignoring_terminal(rewards, next_q_target, terminated, gamma):
    return rewards + gamma * next_q_target.max(dim=1).values


WRONG = {
    "my_discounted_returns": _returns_ignoring_dones,
    "my_td_targets": _td_ignoring_terminal,
}
