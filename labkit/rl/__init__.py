"""Reinforcement learning on small gymnasium environments (phase 30: DQN and REINFORCE on CartPole).

Read in this order: ``envs`` (seeding, vector-env autoreset, valid transitions), ``replay``,
``networks``, ``losses`` (pure functions with the equations), ``dqn`` and ``pg`` (one update step
each); the loops that use them are in ``labkit.trainers.rl_trainer``.
"""
