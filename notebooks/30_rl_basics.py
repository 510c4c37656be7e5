# ---
# jupyter:
#   kernelspec:
#     display_name: Python (labkit)
#     language: python
#     name: labkit
# ---

# %% [markdown]
# # P30 — RL basics: DQN and REINFORCE on CartPole
#
# **Objective.** Write a TD target and discounted returns from memory, say why DQN needs replay
# and a target network, say what a baseline does to a policy gradient, watch an agent before
# and after training, and recognise the usual ways RL training fails from their learning
# curves.
#
# **Done when** (ROADMAP.md, P30) — check with `python -m labkit.done p30`: each method solves
# CartPole-v1 (greedy mean return ≥ 475 over 100 episodes) in ≥ 2 of 3 seeds, DQN within 50k
# env steps and REINFORCE within 500 episodes; the failure modes (no target network, no replay,
# no baseline, reward ×100, too little exploration) are each one config override, shown side by
# side with the working config.
#
# **Run time** ("Run all", defaults): the quick version, 75 s measured with papermill at load
# ≈ 1.5 (200 s at load ≈ 8 from other jobs, 165 s at load 3.5); about 30 s once a
# full run has left its results. The full version (`full = True`: 3 seeds, every failure mode
# with the working config's budget) takes about 13 minutes there (load ≈ 4-5); run it
# headless once — `make rerun NB=30_rl_basics PARAMS="-p full True"` — and every later
# "Run all" reads its results. Smoke setting (`LABKIT_SMOKE=1`, what `make test` runs): 35 s
# (50 s at load 3.5; the spread is the machine's). GPU: not needed (a 2-layer MLP on 4
# numbers; the GPU's launch overhead makes it slower).
#
# **Reference numbers** (`python -m labkit.done p30`, seeds 1-3, one CPU thread):
#
# | | solves CartPole-v1 | time |
# |---|---|---|
# | DQN (Double DQN, replay, target network) | 3/3 seeds, in 2k-12k env steps | ~1 min for all six runs |
# | REINFORCE + value baseline | 3/3 seeds, in 160-210 episodes | (with DQN) |
# | GTX 1060 | not measured (CPU work) | — |
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
# | what every RL loop shares (evaluation, checkpoints, the summary) | `labkit.rl.plumbing` |
# | several seeds, failure modes, curves | `labkit.rl.task` |
# | drawing CartPole, episode GIFs | `labkit.rl.render` |
#
# Headless equivalent: `python -m labkit.train p30_dqn` (or `p30_pg`); a failure mode is one
# override, e.g. `python -m labkit.train p30_dqn dqn.target_network=false`.

# %% tags=["parameters"]
smoke = False  # True: the tiny setting `make test` uses (set LABKIT_SMOKE=1 for the same)
full = False  # True: run the full comparison below and keep its results for later runs
seeds = [1, 2, 3]  # RL results vary a lot by seed: never trust one run
dqn_env_steps = 15_000  # budgets, the same for the working config and every broken variant;
pg_episodes = 300  # runs stop as soon as they are solved
quick_seeds = [1, 2]  # the quick version (no full results yet): section 5's seeds, and
quick_dqn_failure = (1, 4000)  # (seed, budget) of its DQN failure-mode runs
quick_pg_failure = (2, 200)  # (seed, budget) of its REINFORCE failure-mode runs
dqn_eval_every = 1000  # env steps between greedy evaluations (the curves' resolution)
pg_eval_every = 10  # episodes between greedy evaluations

# %%
# %matplotlib inline
import inspect
import json
import logging
import os
import tempfile
import textwrap
import time
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, display

import labkit
from labkit.rl.dqn import dqn_update
from labkit.rl.envs import make_env
from labkit.rl.losses import discounted_returns, td_targets
from labkit.rl.networks import ActorCritic, QNetwork
from labkit.rl.pg import collect_episode, reinforce_update
from labkit.rl.plumbing import evaluate_policy, read_loop_checkpoint
from labkit.rl.render import cartpole_frame, encode_gif, episode_frames, play_episode
from labkit.rl.task import FAILURE_MODES, eval_curves, run_failure_mode, run_seeds
from labkit.utils.claims import claim
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.exercise import Case, check_exercise
from labkit.utils.notebook import Param, check_parameters
from labkit.utils.runs import make_run_dir

pair = Param(list, item=int, low=0, min_len=2, max_len=2)  # (seed, budget)
check_parameters(  # papermill's -p values, checked before anything runs: one clear message
    dict(smoke=smoke, full=full, seeds=seeds, dqn_env_steps=dqn_env_steps, pg_episodes=pg_episodes,
         quick_seeds=quick_seeds, quick_dqn_failure=quick_dqn_failure,
         quick_pg_failure=quick_pg_failure, dqn_eval_every=dqn_eval_every,
         pg_eval_every=pg_eval_every),
    dict(smoke=Param(bool), full=Param(bool), seeds=Param(list, item=int, low=0, min_len=1),
         dqn_env_steps=Param(int, low=1), pg_episodes=Param(int, low=1),
         quick_seeds=Param(list, item=int, low=0, min_len=1), quick_dqn_failure=pair,
         quick_pg_failure=pair, dqn_eval_every=Param(int, low=1), pg_eval_every=Param(int, low=1)),
)  # fmt: skip
smoke = smoke or os.environ.get("LABKIT_SMOKE") == "1"
if smoke:
    full, seeds, quick_seeds = False, [1, 2], [1, 2]
    dqn_env_steps, pg_episodes = 1500, 20
    quick_dqn_failure, quick_pg_failure = (1, 1500), (1, 20)
    dqn_eval_every, pg_eval_every = 250, 5
torch.set_num_threads(1)  # a 2-layer MLP on 4 numbers: threads only add overhead
logging.getLogger("labkit").setLevel(logging.WARNING)  # no per-evaluation lines: we plot them
ROOT = Path(labkit.__file__).resolve().parents[1]
# A fresh folder for every run of the notebook: runs/p30_rl_notebook/<time>_notebook_s<seed>
RUNS = make_run_dir(
    {"experiment": "p30_rl_notebook", "name": "notebook", "seed": seeds[0]},
    Path(tempfile.mkdtemp()) if smoke else ROOT / "runs",
)
# The full comparison's results, kept across runs (never read in smoke mode).
FULL_RESULTS = ROOT / "runs" / "p30_rl_notebook" / "full_results"
settings = dict(seeds=seeds, dqn_env_steps=dqn_env_steps, pg_episodes=pg_episodes,
                dqn_eval_every=dqn_eval_every, pg_eval_every=pg_eval_every)  # fmt: skip
saved = None
if not (smoke or full) and (FULL_RESULTS / "results.json").is_file():
    saved = json.loads((FULL_RESULTS / "results.json").read_text())
    if saved["settings"] != settings:
        print(f"{FULL_RESULTS} holds results for other settings ({saved['settings']}): not used")
        saved = None
version = "full" if full else "saved full results" if saved else "quick"
if version == "quick":
    seeds = quick_seeds
dqn_cfg = apply_overrides(load_config("p30_dqn"), [f"trainer.eval_every={dqn_eval_every}"])
pg_cfg = apply_overrides(load_config("p30_pg"), [f"trainer.eval_every={pg_eval_every}"])
notebook_start = time.perf_counter()
print(f"smoke={smoke}, version: {version}, seeds {seeds}, budgets: DQN {dqn_env_steps:,} env "
      f"steps, REINFORCE {pg_episodes} episodes; this run's folder: {RUNS}")  # fmt: skip
if version == "quick":
    print("Quick version. For the full comparison run once, headless (about 13 min on 2 CPU "
          'cores): make rerun NB=30_rl_basics PARAMS="-p full True"')  # fmt: skip


def to_json(obj):
    """numpy numbers in run summaries -> plain Python, for json.dumps."""
    return obj.item() if hasattr(obj, "item") else str(obj)


def slim(summaries):
    """Run summaries without the per-row metrics, except the Q values section 6 plots."""
    return [
        {**s, "metrics": [row for row in s["metrics"] if "losses/q_values" in row]}
        for s in summaries
    ]


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
# does not leak into the previous one. Write
#
# `my_discounted_returns(rewards [T], gamma, dones [T]) -> returns [T]` (float)
#
# The checker tries γ = 0 (G = r), γ = 1 (plain sums), an episode end at the last step, every
# step an episode end, a single step, and random rewards. Delete the line that binds the
# reference to check your own; an unfinished stub just prints "not implemented yet".


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


ones, steps = torch.ones(5), torch.arange(1.0, 6.0)
returns_cases = [
    Case((steps, 0.0, torch.zeros(5)), "γ = 0"),
    Case((steps, 1.0, torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])), "γ = 1, two episodes"),
    Case((ones, 0.5, torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])), "episode ends at the last step"),
    Case((steps, 0.9, torch.ones(5)), "every step ends an episode"),
    Case((torch.tensor([2.0]), 0.9, torch.zeros(1)), "a single step"),
]
check_exercise(
    my_discounted_returns,
    discounted_returns,
    returns_inputs,
    cases=returns_cases,
    expects="my_discounted_returns(rewards [T], gamma, dones [T]) -> returns [T]",
)
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
# Write the plain DQN target (no Double DQN):
#
# `my_td_targets(rewards [B], next_q_target [B, N], terminated [B], gamma) -> targets [B]`
#
# with next_q_target = Q(s', ·; θ⁻) and terminated 1.0 where s' is terminal. The checker tries
# every transition terminal, none terminal, tied Q values, γ = 0, and random batches.


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


tied = torch.tensor([[1.0, 1.0], [3.0, 3.0], [-2.0, -2.0]])  # [B, N], equal action values
td_cases = [
    Case((torch.ones(3), tied, torch.ones(3), 0.99), "every s' terminal"),
    Case((torch.ones(3), tied, torch.zeros(3), 0.99), "no s' terminal, tied Q values"),
    Case((torch.tensor([1.0, -1.0, 0.5]), tied, torch.zeros(3), 0.0), "γ = 0"),
]
check_exercise(
    my_td_targets,
    td_targets,
    td_inputs,
    cases=td_cases,
    expects="my_td_targets(rewards [B], next_q_target [B, N], terminated [B], gamma) -> [B]",
)
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
# its last value from then on. Thin lines are single seeds; the band spans min to max. (The
# quick version runs two seeds; the full one three.)

# %%
start = time.perf_counter()
if saved:
    dqn_runs, pg_runs = saved["dqn_runs"], saved["pg_runs"]
    print(f"read from {FULL_RESULTS} (written {saved['written']})")
else:
    # Run folders with checkpoints: section 7 plays the trained DQN agent back.
    dqn_runs = run_seeds(dqn_cfg, seeds, [f"trainer.max_env_steps={dqn_env_steps}"],
                         run_root=RUNS / "dqn")  # fmt: skip
    pg_runs = run_seeds(pg_cfg, seeds, [f"trainer.max_episodes={pg_episodes}"],
                        run_root=RUNS / "pg")  # fmt: skip
    print(f"{2 * len(seeds)} runs in {time.perf_counter() - start:.0f} s")
for label, runs in (("DQN", dqn_runs), ("REINFORCE", pg_runs)):
    for s in runs:
        verdict = "solved" if s["solved"] else "not solved"
        print(
            f"{label:9s} seed {s['seed']}: {verdict} after {s['env_steps']:6,} env steps, "
            f"{s['episodes']:4d} episodes, {s['wall_time_s']:5.1f} s "
            f"(100-episode greedy mean {s['final_eval_mean_return']:.0f})"
        )
claim("the shipped configs solve every seed within their budgets",
      all(s["solved"] for s in dqn_runs + pg_runs),
      f"{sum(s['solved'] for s in dqn_runs + pg_runs)}/{len(dqn_runs + pg_runs)} runs", smoke=smoke)  # fmt: skip


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

# %%
mean_steps = {label: np.mean([s["env_steps"] for s in runs]) for label, runs in (("DQN", dqn_runs), ("REINFORCE", pg_runs))}
claim("DQN needs fewer environment steps than REINFORCE (mean over seeds)",
      mean_steps["DQN"] < mean_steps["REINFORCE"],
      f"{mean_steps['DQN']:,.0f} vs {mean_steps['REINFORCE']:,.0f}", smoke=smoke)  # fmt: skip

# %% [markdown]
# ## 6. Failure modes, side by side
# Each broken variant is one config override (`FAILURE_MODES` lists them), trained on the same
# seeds with **the same budget** as the working config — and the working config solves every
# one of those seeds within it, so a broken curve below the blue band is the bug's doing, not a
# short budget. The working curves are section 5's runs (a run stops once solved, so its budget
# only caps it). The quick version runs one seed per algorithm (the one its working config
# solves soonest: seed 1 for DQN, seed 2 for REINFORCE) with a short budget; the full version
# runs every seed of section 5 with its budget.

# %%
for name, mode in FAILURE_MODES.items():
    print(f"{name:24s} {' '.join(mode.overrides)}")

# %%
if version == "quick":
    plan = {"p30_dqn": ([quick_dqn_failure[0]], quick_dqn_failure[1]),
            "p30_pg": ([quick_pg_failure[0]], quick_pg_failure[1])}  # fmt: skip
else:
    plan = {"p30_dqn": (seeds, dqn_env_steps), "p30_pg": (seeds, pg_episodes)}
budget_keys = {"p30_dqn": "trainer.max_env_steps", "p30_pg": "trainer.max_episodes"}
section5 = {"p30_dqn": dqn_runs, "p30_pg": pg_runs}
working = {
    config: [s for s in section5[config] if s["seed"] in failure_seeds]
    for config, (failure_seeds, _) in plan.items()
}
# The comparison is fair only if the working config solved every seed within the shared budget.
for config, (_, budget) in plan.items():
    unit = "env_steps" if config == "p30_dqn" else "episodes"
    for s in working[config]:
        fair = s["solved"] and s[unit] <= budget
        print(f"{config} seed {s['seed']}: working config "
              + (f"solved after {s[unit]:,} {unit.replace('_', ' ')} (budget {budget:,})" if fair
                 else f"did NOT solve within the budget {budget:,}: this comparison is not fair"))  # fmt: skip

fair = [s["solved"] and s["env_steps" if c == "p30_dqn" else "episodes"] <= plan[c][1] for c in plan for s in working[c]]
claim("the working config solves every failure seed within the shared budget", all(fair),
      f"{sum(fair)}/{len(fair)} seeds", smoke=smoke)  # fmt: skip

start = time.perf_counter()
if saved:
    failures = saved["failures"]
else:
    failures = {}
    for name, mode in FAILURE_MODES.items():
        failure_seeds, budget = plan[mode.config]
        overrides = [f"trainer.eval_every={dqn_eval_every if mode.config == 'p30_dqn' else pg_eval_every}",
                     f"{budget_keys[mode.config]}={budget}"]  # fmt: skip
        result = run_failure_mode(name, failure_seeds, overrides=overrides, with_working=False)
        failures[name] = result["summaries"]["broken"]
    print(f"{sum(len(v) for v in failures.values())} broken runs in "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
if full and not smoke:  # keep the full results: every later "Run all" reads them
    FULL_RESULTS.mkdir(parents=True, exist_ok=True)
    results = dict(settings=settings, written=time.strftime("%Y-%m-%d %H:%M"),
                   dqn_runs=slim(dqn_runs), pg_runs=slim(pg_runs),
                   failures={k: slim(v) for k, v in failures.items()})  # fmt: skip
    (FULL_RESULTS / "results.json").write_text(json.dumps(results, default=to_json))
    agent = read_loop_checkpoint(RUNS / "dqn" / f"s{seeds[0]}")  # the agent section 7 plays
    torch.save(agent["model"], FULL_RESULTS / "dqn_agent.pt")
    print(f"full results written to {FULL_RESULTS}")

# %% [markdown]
# What to look for in each panel (red: broken, blue: working; the captions repeat it):

# %%
LOOK_FOR = {
    "dqn_no_target_network": "the red curve collapses or never rises: Q chases its own target "
    "(the Q plot below shows values running away)",
    "dqn_no_replay": "red rises, then falls again: it learns something and forgets it, since "
    "every update sees only the newest transitions",
    "dqn_rewards_x100": "red stays low or creeps up late: Q must climb 100x higher with "
    "clipped, learning-rate-sized steps",
    "dqn_little_exploration": "red is slower and less reliable, not hopeless: CartPole's random "
    "start states explore a little for free",
    "pg_no_baseline": "red learns slower and spreads more across seeds: an unbiased but noisy "
    "gradient",
    "pg_rewards_x100": "red stalls low: huge advantages and value loss, then clipping turns "
    "each update into a fixed-size noisy step",
    "pg_little_exploration": "red flattens early: π becomes nearly deterministic before it "
    "has found good behaviour, and log π stops giving gradient",
}
if version == "quick":  # one seed per failure and a short budget: no spread, no late climb to see
    LOOK_FOR["dqn_rewards_x100"] = ("red stays low: Q must climb 100x higher with clipped, "
                                    "learning-rate-sized steps (the full version's budget shows how late it climbs)")
    LOOK_FOR["pg_no_baseline"] = ("red learns slower: an unbiased but noisy gradient (one seed here; "
                                  "the full version shows its spread across seeds)")  # fmt: skip
fig, axes = plt.subplots(2, 4, figsize=(18, 9.5))
for ax, (name, broken) in zip(axes.flat, failures.items()):
    mode = FAILURE_MODES[name]
    x = "env_steps" if mode.config == "p30_dqn" else "episodes"
    grid, curves = eval_curves(working[mode.config] + broken, x)  # one grid for both
    n = len(working[mode.config])
    plot_band(ax, grid, curves[:n], "working", "tab:blue")
    plot_band(ax, grid, curves[n:], "broken", "tab:red")
    ax.axhline(475, color="gray", ls="--", lw=1)
    ax.set(xlabel=x.replace("_", " "), ylabel="greedy return", ylim=(0, 520))
    ax.set_title(f"{name}\n{' '.join(mode.overrides)}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax.text(0.5, -0.2, "\n".join(textwrap.wrap("Look for: " + LOOK_FOR[name], 48)),
            transform=ax.transAxes, ha="center", va="top", fontsize=8.5)  # fmt: skip
axes.flat[-1].axis("off")
fig.subplots_adjust(hspace=0.75, wspace=0.3)
plt.show()

for name, broken in failures.items():
    solved = sum(s["solved"] for s in broken)
    finals = ", ".join(f"{s['final_eval_mean_return']:.0f}" for s in broken)
    print(f"{name:24s} solved {solved}/{len(broken)}; final greedy returns {finals}")
    print(f"{'':24s} why: {FAILURE_MODES[name].why}")
unsolved = [name for name, broken in failures.items() if not any(s["solved"] for s in broken)]
claim("no broken variant solves CartPole within the working config's budget",
      len(unsolved) == len(failures), f"{len(unsolved)}/{len(failures)} unsolved", smoke=smoke)  # fmt: skip
final = {name: np.mean([s["final_eval_mean_return"] for s in broken]) for name, broken in failures.items()}
dqn_modes = [n for n in final if n.startswith("dqn_")]
claim("too little exploration is the mildest DQN failure (the highest final return)",
      max(dqn_modes, key=final.get) == "dqn_little_exploration",
      ", ".join(f"{n[4:]} {final[n]:.0f}" for n in dqn_modes), smoke=smoke)  # fmt: skip
claim("without a target network the greedy policy ends worse than random (< 20, random ≈ 22)",
      final["dqn_no_target_network"] < 20, f"{final['dqn_no_target_network']:.0f}", smoke=smoke)  # fmt: skip

# %% [markdown]
# The deadly triad is visible in the Q values themselves. A CartPole return is at most
# Σ γ^t ≈ 100 with γ = 0.99, so a Q value far above 100 is an estimate that has lost touch with
# any reward. The trainer logs the batch mean of Q(s, a) as `losses/q_values`. (Log scale: every
# value here is positive, since every reward is +1.)


# %%
def q_value_curve(summary):
    """(env steps [K], mean Q(s, a) of the last update batch [K]) from a run's logged rows."""
    rows = [row for row in summary["metrics"] if "losses/q_values" in row]
    return [row["step"] for row in rows], [row["losses/q_values"] for row in rows]


plt.figure(figsize=(6.5, 3.8))
for summaries, color, label in (
    (working["p30_dqn"], "tab:blue", "with target network"),
    (failures["dqn_no_target_network"], "tab:red", "without"),
):
    for i, summary in enumerate(summaries):
        plt.plot(*q_value_curve(summary), ".-", color=color, label=label if i == 0 else None)
plt.axhline(100, color="gray", ls="--", lw=1, label="largest true value (≈ 100)")
plt.yscale("log")
plt.ylim(bottom=0.5)
plt.xlabel("env steps")
plt.ylabel("mean Q(s, a) of a batch (log scale)")
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# What each curve shows (the full-budget run; smoke settings are too short to tell):
# - **No target network (deadly triad).** Bootstrapping from the network being trained, 128
#   updates in a row chase their own targets; Q values run away (far above the at most 100 a
#   return can be worth) and the greedy policy collapses to one action — worse than random.
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
# ## 7. Watch the agent: before and after training
# Numbers hide what a policy does. Below, the greedy DQN agent of section 5's first seed plays one
# episode from the same start state before training (random weights) and after. Frames are
# drawn from the state alone with OpenCV (`labkit.rl.render`): the cart, the pole, the ±12°
# the pole may lean (dashed red), the track's ends (red) and the push the agent chose (blue
# arrow). The GIFs are also saved into this run's folder.

# %%
obs_dim, num_actions = 4, 2
torch.manual_seed(seeds[0])
untrained = QNetwork(obs_dim, num_actions, dqn_cfg["dqn"]["hidden"])  # random weights
trained = QNetwork(obs_dim, num_actions, dqn_cfg["dqn"]["hidden"])
if saved:
    trained.load_state_dict(torch.load(FULL_RESULTS / "dqn_agent.pt", weights_only=True))
else:
    trained.load_state_dict(read_loop_checkpoint(RUNS / "dqn" / f"s{seeds[0]}")["model"])
agents = {"untrained": untrained.eval(), "trained": trained.eval()}
episodes = {
    name: play_episode(
        lambda obs, q=q: q(obs).argmax(-1), seed=123, max_steps=60 if smoke else None
    )
    for name, q in agents.items()
}
for name, episode in episodes.items():
    every = max(len(episode.states) // 120, 1)  # at most ~120 frames a GIF
    frames = episode_frames(episode, label=name, every=every, width=360, height=180)
    gif = encode_gif(frames, fps=25)
    (RUNS / f"cartpole_{name}.gif").write_bytes(gif)
    ending = "hit the 500-step limit" if episode.truncated else "the pole fell or the cart left"
    print(f"{name}: return {episode.total_return:.0f}, {ending} ({len(frames)} frames shown)")
    display(Image(data=gif, format="gif"))

# %% [markdown]
# Play it back yourself (in Jupyter): pick the agent and move through the episode; the bars
# are the two Q values in that state, and the agent pushes towards the larger. The strip
# underneath is the same, fixed, for a headless run.


# %%
def show_step(agent="trained", t=0):
    """Frame t of an agent's episode next to its Q values there."""
    episode = episodes[agent]
    t = min(t, len(episode.states) - 1)
    action = int(episode.actions[t]) if t < len(episode.actions) else None
    with torch.no_grad():
        q = agents[agent](torch.as_tensor(episode.states[t])[None])[0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 2.6), width_ratios=[3, 1])
    ax1.imshow(cartpole_frame(episode.states[t], action=action,
                              caption=f"{agent}, step {t} of {len(episode.actions)}"))  # fmt: skip
    ax1.axis("off")
    ax2.bar(["left", "right"], q.numpy(), color=["tab:blue", "tab:orange"])
    ax2.set_title("Q(s, ·)", fontsize=9)
    plt.tight_layout()
    plt.show()


longest = max(len(e.states) for e in episodes.values()) - 1
display(
    widgets.interactive(
        show_step,
        agent=widgets.ToggleButtons(options=list(agents), value="trained"),
        t=widgets.IntSlider(0, min=0, max=longest, step=1, continuous_update=False),
    )
)
fig, axes = plt.subplots(2, 5, figsize=(16, 3.6))
for row, (name, episode) in enumerate(episodes.items()):
    picks = np.linspace(0, len(episode.states) - 1, 5).round().astype(int)
    for ax, t in zip(axes[row], picks, strict=True):
        action = int(episode.actions[t]) if t < len(episode.actions) else None
        ax.imshow(cartpole_frame(episode.states[t], action=action, caption=f"{name}, step {t}"))
        ax.axis("off")
plt.tight_layout()
plt.show()
print(f"notebook run time: {time.perf_counter() - notebook_start:.0f} s")

# %% [markdown]
# ## What to remember
# - DQN regresses Q(s, a) on y = r + γ (1 − terminated) max Q(s', ·; θ⁻); truncation is not
#   termination.
# - Replay decorrelates updates; the target network holds the regression target still. Take
#   either away and the deadly triad shows.
# - A policy gradient is unbiased with any action-independent baseline; a good baseline (V(s))
#   cuts its variance, and normalised advantages make the step size independent of reward scale.
# - RL curves vary wildly by seed: compare variants over several seeds, with bands, and give
#   the broken variant the budget the working one needs.
# - Watch the agent: a return is one number, an episode shows *how* it balances (or fails).
