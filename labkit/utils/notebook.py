"""What every notebook's first cells need: a fresh run folder and checked papermill parameters.

A notebook's "Run all" writes into a new ``runs/<experiment>/<time>_notebook_s<seed>/`` folder
(:func:`notebook_run_dir`), never into a fixed one it would resume from or overwrite. Its
``parameters`` cell (the one papermill's ``-p name value`` replaces) is checked by
:func:`check_parameters` against a spec of :class:`Param`; every problem is named in ONE
paragraph, and the error shows in Jupyter and in papermill's output as that paragraph alone, not a
traceback::

    check_parameters(
        {"steps": steps, "lr": lr, "mode": mode},
        {"steps": Param(int, low=1), "lr": Param(float, low=0, low_open=True), "mode": Param(str, choices=("a", "b"))},
    )

A result that took minutes may be reused by a later "Run all" only when its settings match
exactly: :func:`save_settings` records them beside a finished result, :func:`matching_run` finds
one made with the same settings (the notebook then says which folder it reused).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labkit.utils.config import ConfigError
from labkit.utils.runs import RUNS_DIR, make_run_dir


def notebook_run_dir(experiment: str, seed: int, root: str | Path = RUNS_DIR) -> Path:
    """A fresh ``<root>/<experiment>/<time>_notebook_s<seed>/`` folder for one "Run all".

    ``experiment`` names the notebook's folder, e.g. ``"p40_active_notebook"``; two runs started in
    the same second get ``..._s0`` and ``..._s0-1`` (``make_run_dir`` creates it atomically).
    """
    return make_run_dir({"experiment": experiment, "name": "notebook", "seed": seed}, root)


class ParameterError(ConfigError):
    """Notebook parameters that cannot be used; the message names each one and what it takes.

    IPython prints an exception through its ``_render_traceback_`` when it has one: here that is
    the message alone, so Jupyter and papermill's output show one paragraph, not a traceback.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"ParameterError: {self}"]


@dataclass(frozen=True)
class Param:
    """What one notebook parameter takes.

    ``kind``: ``int``, ``float`` (an int is accepted), ``bool``, ``str`` or ``list`` (then
    ``item`` is the type of its elements and ``low``/``high`` bound each element, ``min_len`` and
    ``max_len`` its length; a tuple is accepted too). ``low``/``high``: inclusive bounds (``low_open``: strictly above ``low``).
    ``choices``: the allowed values; with ``other`` a description of what else is allowed
    (e.g. ``"a run folder"``), any other string passes too.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple | None = None
    other: str | None = None
    item: type | None = None
    min_len: int = 0
    max_len: int | None = None

    def describe(self) -> str:
        """What the parameter takes, in words: ``an int >= 1``, ``"auto", "none" or a folder``."""
        if self.choices is not None:
            words = [repr(c) for c in self.choices] + ([self.other] if self.other else [])
            return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]
        kind = self.item if self.kind is list else self.kind
        name = {int: "an int", float: "a number", bool: "True or False", str: "a string"}[kind]
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"<= {self.high:g}")
        text = name + (" " + " and ".join(bounds) if bounds else "")
        if self.kind is list:
            if self.max_len == self.min_len:
                count = f"{self.min_len} "
            else:
                count = f"at least {self.min_len} " if self.min_len else ""
                count += f"at most {self.max_len} " if self.max_len is not None else ""
            return f"a list of {count}values, each {text}"
        return text

    def accepts(self, value: Any) -> bool:
        if self.choices is not None and value in self.choices:
            return True
        if self.choices is not None and not (self.other and isinstance(value, str) and value):
            return False
        if self.kind is list:
            if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
                return False
            if self.max_len is not None and len(value) > self.max_len:
                return False
            element = Param(self.item, self.low, self.high, self.low_open)
            return all(element.accepts(v) for v in value)
        if not _is_a(value, self.kind):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high


def _is_a(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int in Python, never a step count here
        return False
    if kind is float:
        return isinstance(value, (int, float)) and value == value  # not nan
    return isinstance(value, kind)


def check_parameters(values: dict[str, Any], spec: dict[str, Param]) -> None:
    """Check a notebook's parameters; raise ONE :class:`ParameterError` naming every bad one.

    ``values``: the parameters as the ``parameters`` cell (and papermill's ``-p``) set them;
    ``spec``: what each takes. A name in ``values`` without a spec is refused too (a typo in the
    notebook); papermill itself warns about ``-p`` names the notebook does not have.
    """
    problems = []
    for name, value in values.items():
        if name not in spec:
            problems.append(f"{name} has no spec (the notebook must say what it takes)")
        elif not spec[name].accepts(value):
            problems.append(
                f"{name} = {value!r} ({type(value).__name__}) must be {spec[name].describe()}"
            )
    if problems:
        raise ParameterError(
            "Notebook parameters that cannot be used: "
            + "; ".join(problems)
            + ". Give them in the parameters cell or as papermill's -p NAME VALUE "
            "(-y 'NAME: [1, 2]' for a list), then run all again."
        )


def save_settings(folder: str | Path, settings: dict) -> None:
    """Write ``settings`` as ``<folder>/config.yaml`` once a result in ``folder`` is complete: what
    :func:`matching_run` compares a later "Run all"'s settings with."""
    tmp = Path(folder) / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(settings, sort_keys=False))
    tmp.replace(Path(folder) / "config.yaml")  # atomic: a cut run leaves no half-written file


def matching_run(root: str | Path, settings: dict, sub: str = "") -> Path | None:
    """The newest earlier result made with exactly these ``settings``, or None.

    Looks at ``<root>/*/<sub>/config.yaml`` (written by :func:`save_settings` when the result was
    complete) and returns the newest folder ``<root>/<run>/<sub>`` whose settings equal
    ``settings`` key for key (a changed step count, seed or size never matches).
    """
    wanted = yaml.safe_load(yaml.safe_dump(settings))  # the types a YAML round trip gives
    for config in sorted(Path(root).glob(f"*/{sub}/config.yaml" if sub else "*/config.yaml"))[::-1]:
        try:
            saved = yaml.safe_load(config.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if saved == wanted:
            return config.parent
    return None
