# %% [markdown]
# # P30 — RL basics: DQN and REINFORCE on CartPole
#
# Two ways to learn to balance a pole from nothing but a reward of +1 per step: learn how good
# each action is (DQN, value-based), or push up the probability of actions that led to high
# returns (REINFORCE with a baseline, policy gradient). Every piece is a labkit function; the
# notebook imports it rather than retyping it:
#
# | piece | where it lives |
# |---|---|
# | seeded envs, truncation vs termination | `labkit.rl.envs` |
# | Bellman (TD) targets, discounted returns, losses | `labkit.rl.losses` |
# | experience replay | `labkit.rl.replay.ReplayBuffer` |
# | ε-greedy, target network, one DQN update | `labkit.rl.dqn` |
# | one REINFORCE update with a baseline | `labkit.rl.pg` |
# | the training loops | `labkit.rl.loops` (`train_dqn`, `train_pg`) |
# | what every RL loop shares (evaluation, logging, checkpoints) | `labkit.trainers.rl_trainer` |
# | several seeds, failure modes, curves | `labkit.rl.task` |
#
# What you should be able to do afterwards: write a TD target and discounted returns from memory,
# say why DQN needs replay and a target network, say what a baseline does to a policy gradient,
# and recognise the usual ways RL training fails from their learning curves.
#
# Headless equivalent: `python -m labkit.train p30_dqn` (or `p30_pg`); a failure mode is one
# override, e.g. `python -m labkit.train p30_dqn dqn.target_network=false`.
# `python -m labkit.done p30` checks that both solve CartPole-v1.
# With the settings below the notebook takes about 6 minutes on one CPU core (smoke: ~20 s).

# %% tags=["parameters"]
smoke = False  # True: the tiny setting `make test` uses (set LABKIT_SMOKE=1 for the same)
seeds = [1, 2, 3]  # RL results vary a lot by seed: never trust one run
dqn_env_steps = 50_000  # budgets; runs stop as soon as they are solved
pg_episodes = 500
failure_seeds = [1, 2, 3]
failure_dqn_env_steps = 15_000  # shorter budgets for the broken variants (most never solve)
failure_pg_episodes = 300
dqn_eval_every = 1000  # env steps between greedy evaluations (the curves' resolution)
pg_eval_every = 10  # episodes between greedy evaluations

# %%
import inspect
import logging
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from labkit.rl.dqn import dqn_update
from labkit.rl.envs import make_env
from labkit.rl.losses import discounted_returns, td_targets
from labkit.rl.networks import ActorCritic
from labkit.rl.pg import collect_episode, reinforce_update
from labkit.rl.task import FAILURE_MODES, eval_curves, run_failure_mode, run_seeds
from labkit.trainers.rl_trainer import evaluate_policy
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.exercise import check_exercise

smoke = smoke or os.environ.get("LABKIT_SMOKE") == "1"
if smoke:
    seeds, failure_seeds = [1, 2], [1]
    dqn_env_steps = failure_dqn_env_steps = 1500
    pg_episodes = failure_pg_episodes = 20
    dqn_eval_every, pg_eval_every = 250, 5
torch.set_num_threads(1)  # a 2-layer MLP on 4 numbers: threads only add overhead
logging.getLogger("labkit").setLevel(logging.WARNING)  # no per-evaluation lines: we plot them
dqn_cfg = apply_overrides(load_config("p30_dqn"), [f"trainer.eval_every={dqn_eval_every}"])
pg_cfg = apply_overrides(load_config("p30_pg"), [f"trainer.eval_every={pg_eval_every}"])
print(
    f"smoke={smoke}, seeds {seeds}, DQN budget {dqn_env_steps} env steps, PG {pg_episodes} episodes"
)

# %% [markdown]
# ## 1. The MDP
# A Markov decision process is a state s, an action a, a reward r and a next state s' drawn from
# the environment's dynamics p(s' | s, a). CartPole-v1: s is 4 numbers (cart position and
# velocity, pole angle and angular velocity), a ∈ {push left, push right}, r = +1 for every
# step the pole stays up. The episode *terminates* when the pole falls or the cart leaves the
# track, and is *truncated* by a time limit at 500 steps — so the best possible return is 500,
# and "solved" here means a greedy policy averages ≥ 475 over 100 episodes.
#
# The agent maximises the discounted return G_t = r_t + γ r_{t+1} + γ² r_{t+2} + …; with
# γ = 0.99 it looks about 1/(1−γ) = 100 steps ahead.

# %%
env = make_env("CartPole-v1", seed=0)
obs, _ = env.reset()
print("observation space:", env.observation_space)
print("action space:", env.action_space, "| first observation:", np.round(obs, 3))
env.close()


def random_policy(observations):
    """Uniformly random actions for a batch of observations [N, 4] -> [N]."""
    return torch.randint(0, 2, (len(observations),))


torch.manual_seed(0)
random_returns = evaluate_policy(random_policy, "CartPole-v1", num_episodes=100, seed=10_000)
print(
    f"random policy: return {random_returns.mean():.1f} ± {random_returns.std():.1f} "
    "over 100 episodes"
)

# %% [markdown]
# ### Exercise: discounted returns
# G_t = r_t + γ (1 − done_t) G_{t+1}, computed backwards in one pass. `done_t` = 1 marks the last
# step of an episode, so that when several episodes are laid end to end one episode's return
# does not leak into the previous one. Write `my_discounted_returns(rewards, gamma, dones)` for
# rewards and dones of shape [T]; delete the line that binds the reference to check your own.


# %%
def my_discounted_returns(rewards, gamma, dones):
    # your code: loop t = T-1 .. 0, keep the running G_{t+1}, reset it where dones[t] == 1
    ...


my_discounted_returns = discounted_returns  # delete this line to check your own


def returns_inputs(trial_seed):
    g = torch.Generator().manual_seed(trial_seed)
    rewards = torch.randn(12, generator=g)  # [T]
    dones = (torch.rand(12, generator=g) < 0.2).float()  # [T] a few episode ends
    return rewards, 0.9, dones


check_exercise(my_discounted_returns, discounted_returns, returns_inputs)
# A hand-checked case: three rewards of 1 with γ = 0.5: G = [1 + 0.5·1.5, 1 + 0.5·1, 1].
print(discounted_returns(torch.ones(3), 0.5))

# %% [markdown]
# ## 2. Bellman targets: what DQN regresses on
# The optimal action value satisfies the Bellman optimality equation
# Q*(s, a) = E[r + γ max_a' Q*(s', a')]. DQN (Mnih et al. 2015) turns it into regression: for a
# transition (s, a, r, s') the target is
#
# y = r + γ (1 − terminated) max_a' Q(s', a'; θ⁻)
#
# and the loss is Huber(Q(s, a; θ) − y). Three details matter:
# - `terminated` zeroes the future only at a real terminal state. A *truncated* episode (the
#   500-step limit) still owes γ max Q(s', ·): treating it as terminal teaches the agent that
#   the 500th step is worth nothing. `labkit.rl.envs.valid_transitions` keeps the two apart.
# - θ⁻ is a *target network*, a copy of θ refreshed only now and then (section 3).
# - Double DQN (van Hasselt et al. 2016) lets θ choose argmax a' and θ⁻ score it, removing the
#   upward bias of max over noisy estimates. The lab's config uses it.

# %%
print(inspect.getsource(td_targets))

# %% [markdown]
# ### Exercise: the TD target
# Write the plain DQN target `my_td_targets(rewards, next_q_target, terminated, gamma)`:
# rewards [B], next_q_target [B, N] = Q(s', ·; θ⁻), terminated [B] → targets [B].


# %%
def my_td_targets(rewards, next_q_target, terminated, gamma):
    # your code: r + γ (1 − terminated) max over the action dimension of next_q_target
    ...


my_td_targets = td_targets  # delete this line to check your own


def td_inputs(trial_seed):
    g = torch.Generator().manual_seed(trial_seed)
    rewards = torch.randn(8, generator=g)  # [B]
    next_q_target = torch.randn(8, 3, generator=g)  # [B, N]
    terminated = (torch.rand(8, generator=g) < 0.3).float()  # [B]
    return rewards, next_q_target, terminated, 0.99


check_exercise(my_td_targets, td_targets, td_inputs)
# Hand-checked: r = 1, Q(s', ·) = [2, 5], γ = 0.9 -> 1 + 0.9·5 = 5.5, or 1 when s' is terminal.
print(
    td_targets(torch.ones(2), torch.tensor([[2.0, 5.0], [2.0, 5.0]]), torch.tensor([0.0, 1.0]), 0.9)
)

# %% [markdown]
# ## 3. Why replay and a target network
# Regressing Q on its own bootstrapped targets is unstable for two reasons, and DQN has one fix
# for each:
# - **Experience replay** (Lin 1992). Consecutive transitions are almost identical states, so
#   gradient steps on them in order are strongly correlated, and the network forgets states it
#   has not visited lately. A large buffer sampled uniformly gives nearly independent minibatches
#   and reuses every transition many times.
# - **Target network.** With y computed from θ itself, every update moves its own target: Q
#   chases a target that runs away from it. Freezing θ⁻ between copies turns each stretch of
#   updates into a plain supervised regression.
#
# Sutton & Barto call the combination of function approximation, bootstrapping and off-policy
# data the *deadly triad*: together they can diverge. DQN needs all three, and replay plus the
# target network are what keep it stable. One update, start to end:

# %%
print(inspect.getsource(dqn_update))

# %% [markdown]
# ## 4. Policy gradients and what a baseline does
# REINFORCE (Williams 1992) samples whole episodes from π and steps along
# ∇J ≈ mean_t [∇ log π(a_t|s_t) · (G_t − b(s_t))]. Any baseline b that does not depend on a_t
# leaves this estimate unbiased, because E_a[∇ log π(a|s)] = 0 — but it changes its variance a
# lot. On CartPole every G_t is positive, so without a baseline every action taken is pushed up
# and only the size of the push tells good from bad. With b(s) ≈ V(s) the sign says whether the
# action did better or worse than usual from that state.
#
# Measure it: sample batches of 4 episodes from one fixed, untrained policy and compute the
# gradient estimate of each batch with and without a baseline (the library's own update, with a
# learning rate of 0 so that it only computes the gradient). The baseline here is the batch mean
# of G_t, a constant for the batch.


# %%
def policy_gradients(baseline, num_batches, episodes_per_batch=4):
    """One gradient estimate per batch of episodes of a fixed policy: [num_batches, P]."""
    torch.manual_seed(0)
    model = ActorCritic(4, 2, hidden=[64, 64])
    no_step = torch.optim.SGD(model.parameters(), lr=0.0)  # compute the gradient, change nothing
    env, g = make_env("CartPole-v1", seed=0), torch.Generator().manual_seed(0)
    grads = []
    for _ in range(num_batches):
        batch = [
            collect_episode(env, model, g, torch.device("cpu")) for _ in range(episodes_per_batch)
        ]
        reinforce_update(model, no_step, batch, gamma=0.99, baseline=baseline, normalize=False)
        grads.append(torch.cat([p.grad.flatten() for p in model.policy.parameters()]))
    return torch.stack(grads)


grads = {b: policy_gradients(b, num_batches=8 if smoke else 64) for b in ("none", "mean")}
for baseline, g in grads.items():
    total_variance = g.var(dim=0).sum().item()  # trace of the covariance over batches
    print(
        f"baseline={baseline:5s} |mean gradient| {g.mean(0).norm():.3f}   "
        f"total variance {total_variance:.3f}"
    )
cosine = torch.cosine_similarity(grads["none"].mean(0), grads["mean"].mean(0), dim=0)
print(f"cosine between the two mean gradients: {cosine:.3f}")

# %% [markdown]
# The same direction on average, less noise per batch — and this is the crudest baseline, one
# number per batch. The lab's REINFORCE learns V(s) alongside π (mean-squared error on G_t),
# a baseline per state, and also normalises the advantages to mean 0, std 1 per update, which
# makes one learning rate work whether episodes last 10 steps or 500. Section 6 shows what
# learning looks like with neither.

# %% [markdown]
# ## 5. Learning curves over seeds
# Both algorithms with the shipped configs, once per seed. Each curve is the greedy policy's
# mean return (argmax Q, or argmax of the logits) at regular evaluations; a run stops when a
# quick evaluation reaches 475 and a 100-episode evaluation confirms it, and its curve stays at
# its last value from then on. Thin lines are single seeds; the band spans min to max.

# %%
dqn_runs = run_seeds(dqn_cfg, seeds, [f"trainer.max_env_steps={dqn_env_steps}"])
pg_runs = run_seeds(pg_cfg, seeds, [f"trainer.max_episodes={pg_episodes}"])
for label, runs in (("DQN", dqn_runs), ("REINFORCE", pg_runs)):
    for s in runs:
        verdict = "solved" if s["solved"] else "not solved"
        print(
            f"{label:9s} seed {s['seed']}: {verdict} after {s['env_steps']:6,} env steps, "
            f"{s['episodes']:4d} episodes, {s['wall_time_s']:5.1f} s "
            f"(100-episode greedy mean {s['final_eval_mean_return']:.0f})"
        )


# %%
def plot_band(ax, grid, curves, label, color):
    """Mean of several seeds' curves [S, G] with a min-max band and thin per-seed lines."""
    ax.fill_between(grid, np.nanmin(curves, 0), np.nanmax(curves, 0), color=color, alpha=0.2)
    ax.plot(grid, np.nanmean(curves, 0), color=color, label=label)
    for curve in curves:
        ax.plot(grid, curve, color=color, lw=0.5, alpha=0.6)


fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for ax, runs, x, label in (
    (axes[0], dqn_runs, "env_steps", "DQN"),
    (axes[1], pg_runs, "episodes", "REINFORCE + baseline"),
):
    grid, curves = eval_curves(runs, x)
    plot_band(ax, grid, curves, f"{label}, {len(runs)} seeds", "tab:blue")
    ax.axhline(475, color="gray", ls="--", lw=1, label="solved (475)")
    ax.set(xlabel=x.replace("_", " "), ylabel="greedy return", ylim=(0, 520), title=label)
    ax.legend(loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# DQN usually needs fewer *environment steps* (it reuses each transition many times from the
# replay buffer); REINFORCE needs no buffer and no target network but throws every episode away
# after one gradient step. Per wall-clock second both are fast on CartPole.

# %% [markdown]
# ## 6. Failure modes, side by side
# Each broken variant is one config override (`FAILURE_MODES` lists them); the same seeds train
# the working config for reference. Shorter budgets than above: most broken runs never solve.

# %%
for name, mode in FAILURE_MODES.items():
    print(f"{name:24s} {' '.join(mode.overrides)}")

# %%
# Overrides for both variants: the evaluation period and the shorter budget.
settings = {
    "p30_dqn": [
        f"trainer.eval_every={dqn_eval_every}",
        f"trainer.max_env_steps={failure_dqn_env_steps}",
    ],
    "p30_pg": [
        f"trainer.eval_every={pg_eval_every}",
        f"trainer.max_episodes={failure_pg_episodes}",
    ],
}
# The working runs are the same for every failure mode of one algorithm: train them once.
working = {config: run_seeds(config, failure_seeds, extra) for config, extra in settings.items()}
failures = {
    name: run_failure_mode(name, failure_seeds, overrides=settings[mode.config], with_working=False)
    for name, mode in FAILURE_MODES.items()
}

# %%
fig, axes = plt.subplots(2, 4, figsize=(16, 7))
for ax, (name, result) in zip(axes.flat, failures.items()):
    config = result["mode"].config
    grid, curves = eval_curves(working[config], result["x"])
    plot_band(ax, grid, curves, "working", "tab:blue")
    plot_band(ax, result["grid"], result["broken"], "broken", "tab:red")
    ax.axhline(475, color="gray", ls="--", lw=1)
    ax.set(
        title=f"{name}\n{' '.join(result['mode'].overrides)}",
        xlabel=result["x"].replace("_", " "),
        ylabel="greedy return",
        ylim=(0, 520),
    )
    ax.title.set_fontsize(8)
    ax.legend(loc="upper left", fontsize=7)
axes.flat[-1].axis("off")
plt.tight_layout()
plt.show()

for name, result in failures.items():
    broken = result["summaries"]["broken"]
    solved = sum(s["solved"] for s in broken)
    finals = ", ".join(f"{s['final_eval_mean_return']:.0f}" for s in broken)
    print(f"{name:24s} solved {solved}/{len(broken)}; final greedy returns {finals}")
    print(f"{'':24s} why: {result['mode'].why}")

# %% [markdown]
# The deadly triad is visible in the Q values themselves. A CartPole return is at most
# Σ γ^t ≈ 100 with γ = 0.99, so a Q value far above 100 is an estimate that has lost touch with
# any reward. The trainer logs the batch mean of Q(s, a) as `losses/q_values`:


# %%
def q_value_curve(summary):
    """(env steps [K], mean Q(s, a) of the last update batch [K]) from a run's logged rows."""
    rows = [row for row in summary["metrics"] if "losses/q_values" in row]
    return [row["step"] for row in rows], [row["losses/q_values"] for row in rows]


plt.figure(figsize=(6, 3.5))
for summaries, color, label in (
    (working["p30_dqn"], "tab:blue", "with target network"),
    (failures["dqn_no_target_network"]["summaries"]["broken"], "tab:red", "without"),
):
    for i, summary in enumerate(summaries):
        plt.plot(*q_value_curve(summary), ".-", color=color, label=label if i == 0 else None)
plt.axhline(100, color="gray", ls="--", lw=1, label="largest true value (≈ 100)")
plt.yscale("symlog")
plt.xlabel("env steps")
plt.ylabel("mean Q(s, a) of a batch")
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# What each curve shows (the full-budget run; smoke settings are too short to tell):
# - **No target network (deadly triad).** Bootstrapping from the network being trained, 128
#   updates in a row chase their own targets; Q values run away (millions, for a value of at
#   most 100) and the greedy policy collapses to one action — return ≈ 9, worse than random.
# - **No replay (a 64-transition buffer).** Every update sees the latest, highly correlated
#   transitions over and over; the agent learns something, then forgets it: returns rise and
#   fall and rarely reach 475.
# - **Rewards ×100 (reward scaling).** Values of order 10⁴ must be learned with the same steps:
#   TD errors of tens to hundreds sit in the Huber loss's linear part, whose gradient is capped
#   at 1, and Adam's steps are of the learning rate's size whatever the gradient, so Q climbs
#   slowly towards a target 100× further away while the policy built on it is poor. Keep rewards
#   near unit scale (clip or normalise them), as the Atari DQN did.
# - **Too little exploration (DQN).** With ε = 0.05 from the start, the untrained network picks
#   almost every action, so the buffer holds a narrow slice of the state space. The damage is
#   real but milder than the others — slower, less reliable learning rather than none — because
#   CartPole's random start states explore a little for free. A lesson in itself: judge a
#   failure over several seeds before trusting a story about it.
# - **No baseline, no normalisation (variance).** Unbiased but noisy gradients: learning is
#   slower and far less consistent across seeds (section 4 measured the noise).
# - **PG rewards ×100.** Without advantage normalisation the advantages and the value loss grow
#   100× and 10⁴×; gradient clipping then makes every update a fixed-size step in a noisy
#   direction, and the value baseline lags far behind the returns.
# - **Too little exploration (PG).** A large learning rate and no entropy bonus make π nearly
#   deterministic within a few updates; once π(a|s) ≈ 1, ∇ log π ≈ 0 and it stops learning.

# %% [markdown]
# ## What to remember
# - DQN regresses Q(s, a) on y = r + γ (1 − terminated) max Q(s', ·; θ⁻); truncation is not
#   termination.
# - Replay decorrelates updates; the target network holds the regression target still. Take
#   either away and the deadly triad shows.
# - A policy gradient is unbiased with any action-independent baseline; a good baseline (V(s))
#   cuts its variance, and normalised advantages make the step size independent of reward scale.
# - RL curves vary wildly by seed: compare variants over several seeds, with bands.
