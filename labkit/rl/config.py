"""P30's config schema (``p30_dqn.yaml``, ``p30_pg.yaml``) and partial configs over the YAML."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from labkit.utils.config import ConfigError, load_config, merge_config
from labkit.utils.schema import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    RunConfig,
    Section,
    Seed,
    check_config,
)

Discount = Annotated[float, Field(ge=0, le=1)]
Widths = Annotated[list[PositiveInt], Field(min_length=1)]


class EnvConfig(Section):
    id: str = "CartPole-v1"
    num_envs: Annotated[int, Field(ge=1, le=256)] = 1
    max_episode_steps: PositiveInt | None = None


class RLOptimConfig(Section):
    lr: PositiveFloat


class DQNTrainerConfig(Section):
    max_env_steps: PositiveInt
    grad_clip: PositiveFloat | None = 10.0
    log_every: NonNegativeInt = 500
    eval_every: NonNegativeInt = 1000
    ckpt_every: NonNegativeInt = 10000


class PGTrainerConfig(Section):
    max_episodes: PositiveInt
    grad_clip: PositiveFloat | None = 1.0
    log_every: NonNegativeInt = 1
    eval_every: NonNegativeInt = 10
    ckpt_every: NonNegativeInt = 100


class DQNConfig(Section):
    hidden: Widths = [128, 128]
    gamma: Discount = 0.99
    buffer_size: PositiveInt = 50000
    batch_size: PositiveInt = 64
    learning_starts: NonNegativeInt = 1000
    train_every: PositiveInt = 256
    gradient_steps: PositiveInt = 128
    double: bool = True
    loss: Literal["huber", "mse"] = "huber"
    target_network: bool = True
    target_tau: Annotated[float, Field(gt=0, le=1)] = 1.0
    target_every: PositiveInt = 10
    epsilon_start: Probability = 1.0
    epsilon_end: Probability = 0.04
    exploration_steps: NonNegativeInt = 8000
    reward_scale: PositiveFloat = 1.0


class PGConfig(Section):
    episodes_per_update: PositiveInt = 1
    hidden: Widths = [64, 64]
    shared_network: bool = False
    gamma: Discount = 0.99
    baseline: Literal["value", "mean", "none"] = "value"
    normalize_advantages: bool = True
    value_coef: NonNegativeFloat = 0.5
    entropy_coef: NonNegativeFloat = 0.0
    reward_scale: PositiveFloat = 1.0


class RLEvalConfig(Section):
    episodes: PositiveInt = 10
    solve_episodes: PositiveInt = 100
    solve_threshold: float = 475.0
    stop_when_solved: bool = True
    seed: Seed | None = None


class RLRunConfig(RunConfig):
    phase: Literal["p30"]
    torch_threads: Annotated[int, Field(ge=1, le=256)] | None = None
    env: EnvConfig
    optim: RLOptimConfig
    eval: RLEvalConfig


class DQNRunConfig(RLRunConfig):
    """``python -m labkit.train p30_dqn``: DQN on CartPole-v1."""

    algo: Literal["dqn"]
    trainer: DQNTrainerConfig
    dqn: DQNConfig


class PGRunConfig(RLRunConfig):
    """``python -m labkit.train p30_pg``: REINFORCE with a learned baseline on CartPole-v1."""

    algo: Literal["pg"]
    trainer: PGTrainerConfig
    pg: PGConfig


SCHEMAS = {"dqn": DQNRunConfig, "pg": PGRunConfig}


def with_defaults(cfg: dict, name: str | None = None) -> dict:
    """``cfg`` on top of the shipped ``p30_<algo>.yaml``, checked against the algorithm's schema.

    So a partial config (a test's ``{"trainer": {"max_env_steps": 500}}``) runs, and a typo such
    as ``dqn.gama`` or a value out of range fails loudly (``ConfigError``) before anything runs.
    """
    algo = cfg.get("algo") or (name or "p30_dqn").removeprefix("p30_")
    if algo not in SCHEMAS:
        raise ConfigError(
            f"1 config value cannot be used: 'algo' is {algo!r}: expected one of "
            f"{', '.join(SCHEMAS)} (labkit/configs/p30_dqn.yaml or p30_pg.yaml)."
        )
    return check_config(merge_config(load_config(name or f"p30_{algo}"), cfg), SCHEMAS[algo])
