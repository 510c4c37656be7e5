"""P30's configs: a partial config on top of the shipped YAML, with the typo and choice checks."""

from __future__ import annotations

from labkit.rl.pg import BASELINES
from labkit.utils.config import ConfigError, get, load_config, merge_config

# keys with a fixed set of values, checked before anything runs (the first value is the default)
_CHOICES = {"algo": ("dqn", "pg"), "dqn.loss": ("huber", "mse"), "pg.baseline": BASELINES}


def with_defaults(cfg: dict, name: str) -> dict:
    """``cfg`` on top of labkit/configs/<name>.yaml; keys unknown to the YAML raise ``ConfigError``.

    So a partial config (a test's ``{"trainer": {"max_env_steps": 500}}``) runs, and a typo such
    as ``dqn.gama`` fails loudly instead of silently using the default.
    """
    merged = merge_config(load_config(name), cfg, strict=True)
    for dotted, allowed in _CHOICES.items():
        value = get(merged, dotted, default=allowed[0])
        if value not in allowed:
            choices = ", ".join(map(repr, allowed))
            raise ConfigError(f"Config key '{dotted}' is {value!r}; expected one of {choices}.")
    return merged
