"""Typed config schemas: every value type- and range-checked before a run writes anything.

Configs stay plain YAML and plain nested dicts (``load_config``, ``apply_overrides``); checking
them against a phase's schema is a separate step, :func:`check_config`. Schemas are pydantic
models: a field's type, range and allowed choices sit next to its name and its documented
default, and pydantic turns ``"3e-4"`` into ``3e-4`` but refuses ``"abc"`` for an int, ``1.5``
for a seed, ``nan`` for a learning rate. The shared sections (``optim``, ``trainer``) are defined
once here; each phase adds its own sections in ``labkit/<phase>/config.py``.

Why pydantic rather than hand-written checks or OmegaConf: it reports every bad key at once with
its path, type and range, supports cross-field rules (``image_size`` a multiple of ``stride``),
and its models read like the YAML they check.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from labkit.utils.config import ConfigError

# ---------------------------------------------------------------------------------------------
# Field types used by every phase


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
    return value


Finite = Annotated[float, AfterValidator(_finite)]
PositiveFloat = Annotated[float, Field(gt=0), AfterValidator(_finite)]
NonNegativeFloat = Annotated[float, Field(ge=0), AfterValidator(_finite)]
Probability = Annotated[float, Field(ge=0, le=1)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Device = Annotated[str, AfterValidator(_device)]
# Safe as one folder name: no "/" and not "." or ".." (which would leave --runs-dir), and short
# enough that <time>_<name>_s<seed> stays far below the file system's 255-byte limit.
Name = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.+-]*[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$", min_length=1, max_length=100
    ),
]
# A seed every consumer takes: numpy wants < 2**32, and the loaders' per-epoch seed
# (seed * 1_000_003 + epoch) must stay inside int64.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are coerced only where it is safe."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimConfig(Section):
    """``optim:`` — the optimizer and its learning-rate schedule (labkit.trainers.optim)."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    scheduler: Literal["none", "cosine"] = "cosine"
    warmup_steps: NonNegativeInt = 0


class TrainerConfig(Section):
    """``trainer:`` — the supervised loop's settings (labkit.trainers.supervised_trainer)."""

    max_steps: PositiveInt
    amp: Literal["auto", "off", "fp16", "bf16"] = "auto"
    grad_clip: PositiveFloat | None = 1.0
    log_every: PositiveInt = 50
    eval_every: NonNegativeInt = 0
    ckpt_every: NonNegativeInt = 0
    keep_last: PositiveInt = 3
    overfit: NonNegativeInt = 0
    profile_memory: bool = False  # perf.json: peak GPU memory, samples/s (the 6 GB budget)


class RunConfig(Section):
    """The keys every experiment has; a phase's schema adds its sections."""

    phase: str
    experiment: Name
    name: Name = "run"
    seed: Seed = 0
    device: Device = "auto"
    deterministic: bool = False


# ---------------------------------------------------------------------------------------------
# Checking a config


def check_config(cfg: dict, schema: type[BaseModel]) -> dict:
    """``cfg`` checked against ``schema``: a plain dict with types coerced and defaults filled.

    Raises:
        ConfigError: one paragraph naming each bad key, its value, what was expected and, for
            an unknown key, the closest valid one.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"A config must be a mapping of keys to values, got {type(cfg).__name__}."
        )
    try:
        return schema.model_validate(cfg).model_dump()
    except ValidationError as error:
        problems = [_describe(item, schema) for item in error.errors()]
        raise ConfigError(
            f"{len(problems)} config value{'s' if len(problems) > 1 else ''} cannot be used: "
            + "; ".join(problems)
            + ". Fix the YAML file or the key=value override (see the config's comments for "
            "each key's meaning)."
        ) from None


MAX_QUOTED = 80  # characters of a bad value that an error message shows


def _describe(item: dict, schema: type[BaseModel]) -> str:
    key = ".".join(str(part) for part in item["loc"])
    value = item.get("input")
    if item["type"] == "extra_forbidden":
        valid = _valid_keys(schema, item["loc"][:-1])
        close = difflib.get_close_matches(str(item["loc"][-1]), valid, n=1, cutoff=0.5)
        parent = ".".join(str(p) for p in item["loc"][:-1])
        hint = f"; did you mean '{(parent + '.' if parent else '') + close[0]}'?" if close else ""
        return f"unknown key '{key}'{hint} (valid here: {', '.join(valid)})"
    if item["type"] == "missing":
        return f"'{key}' is missing"
    message = item["msg"].removeprefix("Value error, ")
    if not key:  # a rule across keys (e.g. image_size vs stride): its message names them
        return message
    message = message[0].lower() + message[1:] if message else message
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    if len(shown) > MAX_QUOTED:  # a message quotes a value, never pages of it
        shown = shown[:MAX_QUOTED] + "..."
    return f"'{key}' is {shown}: {message}"


def _valid_keys(schema: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = schema
    for part in loc:
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) else model
    return list(model.model_fields) if hasattr(model, "model_fields") else []
