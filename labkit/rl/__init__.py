"""Phase 30: reinforcement learning on small gymnasium environments (DQN and REINFORCE on CartPole).

Read in this order: ``envs`` (seeding, vector-env autoreset, valid transitions), ``replay``,
``networks``, ``losses`` (pure functions with the equations), ``dqn`` and ``pg`` (one update step
each), ``plumbing`` (what both loops repeat: evaluation, episode statistics, checkpoints),
``loops`` (the two training loops), ``task`` (build, run, seeds, failure modes), ``done`` (the
"done when" checks). Explained in notebooks/30_rl_basics.py.
"""
