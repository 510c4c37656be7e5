"""Phase 30: reinforcement learning on small gymnasium environments (DQN and REINFORCE on CartPole).

Read in this order: ``envs`` (seeding, vector-env autoreset, valid transitions), ``replay``,
``networks``, ``losses`` (pure functions with the equations), ``dqn`` and ``pg`` (one update step
each), ``loops`` (the two training loops), ``task`` (run, seeds, failure modes, "done when"
checks). What every RL loop shares (evaluation, episode statistics, checkpoints) is
``labkit.trainers.rl_trainer``. Explained in notebooks/30_rl_basics.py.
"""
