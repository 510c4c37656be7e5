"""Experiment configs: one YAML file per experiment, overridden on the command line as ``a.b=value``.

A config may start with ``extends: NAME`` to inherit another config (its keys first, then this
file's on top). Named configs live in ``labkit/configs/``; a path to any YAML file works too.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config that cannot be used as written; the message says what to change."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``3e-4`` and ``1E5`` as floats.

    PyYAML implements YAML 1.1, where a float needs a dot (``3.0e-4``): ``lr: 3e-4`` would be the
    string ``'3e-4'``. Everyone writes learning rates that way, so scientific notation without a
    dot is a float here too, in files and in ``key=value`` overrides alike.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A mapping whose keys are unique: a second ``trainer:`` section would otherwise replace
        the first whole, and its other keys would fall back to their defaults without a word."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key ([a, b]: 1): construct_mapping reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key}' (first given at line {first}); give each key once",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


# A file of a few aliases can expand into gigabytes ("billion laughs"); no config needs that.
MAX_EXPANDED_VALUES = 100_000


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """How many values ``value`` holds once every alias is written out (shared parts counted
    each time they are referenced, each computed once)."""
    if not isinstance(value, (dict, list)):
        return 1
    if id(value) not in memo:
        memo[id(value)] = 0  # a self-reference counts as nothing more
        items = value.values() if isinstance(value, dict) else value
        memo[id(value)] = 1 + sum(_expanded_size(item, memo) for item in items)
    return memo[id(value)]


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str = "<override>") -> Any:
    """YAML text to Python values (safe: plain types only); a syntax error is a ``ConfigError``
    naming ``source`` and the line."""
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"{source} is not valid YAML ({where.strip() or 'somewhere'}: {problem}). Fix the "
            f"syntax there: each line is 'key: value', nested keys are indented by two spaces."
        ) from None
    if _expanded_size(value, {}) > MAX_EXPANDED_VALUES:
        raise ConfigError(
            f"{source} expands into more than {MAX_EXPANDED_VALUES:,} values through YAML "
            f"aliases (*name); write the values out instead of nesting aliases."
        )
    return value


def available_configs() -> list[str]:
    """Names of the configs shipped in ``labkit/configs/`` (files starting with ``_`` are bases)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _resolve_path(path_or_name: str | Path) -> Path:
    path = Path(path_or_name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path  # a folder named x.yaml is reported by load_config's read
    named = CONFIG_DIR / f"{Path(path_or_name).stem}.yaml"
    if named.exists() and path.parent == Path("."):
        return named
    names = ", ".join(available_configs())
    close = difflib.get_close_matches(str(path_or_name), available_configs(), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"No config named '{path_or_name}'.{hint} Pass a path to a YAML file or one of the "
        f"configs in {CONFIG_DIR}: {names}."
    )


def merge_config(base: dict, top: dict, *, strict: bool = False, _prefix: str = "") -> dict:
    """A copy of ``base`` with ``top``'s values on top; nested mappings are merged key by key.

    Args:
        strict: a key of ``top`` that ``base`` lacks raises ``ConfigError`` naming the closest
            valid key, so a typo cannot silently fall back to a default. Top-level extras (run
            names and the like) are kept.
    """
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if strict and _prefix and key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f" Did you mean '{_prefix}{close[0]}'?" if close else ""
            raise ConfigError(
                f"Unknown config key '{_prefix}{key}'.{hint} Valid keys under '{_prefix[:-1]}': "
                f"{', '.join(base)}."
            )
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(
                merged[key], value, strict=strict, _prefix=f"{_prefix}{key}."
            )
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(path_or_name: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config (``yaml.safe_load``) by file path or by name (``"p00_mnist"``).

    Raises:
        ConfigError: the file does not exist (the message lists the available names), does
            not hold a mapping at its top level, repeats a key, or ``extends`` itself in a cycle.
    """
    path = _resolve_path(path_or_name)
    if path.resolve() in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, path.resolve()))
        raise ConfigError(
            f"'extends' goes round in a cycle: {cycle}. A config may extend another only once "
            f"along a chain; remove one of those 'extends' lines."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = "not a text file" if isinstance(err, UnicodeDecodeError) else err.strerror
        raise ConfigError(
            f"Config '{path}' cannot be read ({reason}). Pass a YAML text file or one of the "
            f"named configs: {', '.join(available_configs())}."
        ) from None
    cfg = parse_yaml(text, str(path)) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{path} must hold a mapping (key: value lines), got {type(cfg).__name__}."
        )
    parent = cfg.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(
                f"{path}: 'extends' must name one config (a name or a path), got {parent!r}."
            )
        cfg = merge_config(load_config(parent, (*_chain, path.resolve())), cfg)
    return cfg


def _flat_keys(cfg: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in cfg.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, dict):
            keys.extend(_flat_keys(value, full + "."))
    return keys


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Return a copy of ``cfg`` with ``["a.b=1", "c=[1, 2]"]`` applied; values are parsed as YAML.

    Only keys that exist may be overridden, so a typo cannot silently do nothing.

    Raises:
        ConfigError: malformed override or unknown key (naming the closest valid key).
    """
    cfg = copy.deepcopy(cfg)
    problems = []  # every bad override, reported together
    for item in overrides:
        if "=" not in item:
            problems.append(
                f"Override '{item}' is not of the form key.sub=value (e.g. trainer.max_steps=100)."
            )
            continue
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except ConfigError:
            value = raw  # not YAML (e.g. 'a: b: c'): keep the text; the schema judges it
        node = cfg
        for depth, part in enumerate(parts):
            is_leaf = depth == len(parts) - 1
            if not isinstance(node, dict) or part not in node:
                valid = _flat_keys(cfg)
                close = difflib.get_close_matches(dotted, valid, n=1, cutoff=0.5)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                problems.append(f"Unknown config key '{dotted}' in override '{item}'.{hint}")
                break
            if is_leaf:
                if isinstance(node[part], str) and isinstance(value, bool):
                    value = raw.strip()  # YAML 1.1 reads off/on/yes/no as booleans: keep the word
                node[part] = value
            else:
                node = node[part]
    if problems:
        raise ConfigError(
            " ".join(problems) + " Only keys present in the config can be overridden; see the "
            "config's YAML file (or --print-config) for the full list."
        )
    return cfg


def get(cfg: dict, dotted: str, default: Any = None) -> Any:
    """``get(cfg, "trainer.max_steps", 100)``: read a nested key with a default."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
