"""Exercise checking for the notebooks: run the learner's function and the library's reference
on the same inputs and report the first place where they disagree.

A notebook exercise cell looks like this::

    def my_train_step(model, optimizer, batch, loss_fn):
        ...                                   # the learner's version
    my_train_step = reference_train_step      # delete this line to check your own
    check_exercise(my_train_step, reference_train_step, make_inputs,
                   expects="my_train_step(model, optimizer, batch, loss_fn) -> float",
                   cases=[Case(args, "a batch of one"), ...])

The checker never stops "Run all": an unfinished stub (it returns ``None`` or raises
``NotImplementedError``) gets a one-line "not implemented yet", a wrong answer or an exception
gets the first mismatch, and the function returns ``False`` in every such case.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Number
from pathlib import Path
from typing import Any

import torch

NOT_IMPLEMENTED = "not implemented yet"


@dataclass(frozen=True)
class Case:
    """Hand-made inputs for a checker and what they test, e.g. ``Case(args, "IoU = threshold")``.

    The boundary cases (ties, thresholds, empty inputs) that random inputs almost never hit.
    ``args`` is copied (``copy.deepcopy``) for each function, so models and optimizers in it
    start identical for the reference and the candidate.
    """

    args: tuple
    label: str


def _first_mismatch(got: Any, expected: Any, path: str, rtol: float, atol: float) -> str | None:
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{path}: expected a tensor {tuple(expected.shape)}, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"{path}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        if got.dtype != expected.dtype:  # a float64 case answered in float32 lost its precision
            return f"{path}: expected dtype {expected.dtype}, got {got.dtype}"
        if expected.dtype.is_floating_point or got.dtype.is_floating_point:
            close = torch.isclose(
                got.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True
            )
        else:
            close = got == expected
        if not bool(close.all()):
            index = tuple(int(i) for i in (~close).nonzero()[0])
            return (
                f"{path}{list(index)}: expected {expected[index].item():.6g}, "
                f"got {got[index].item():.6g} ({int((~close).sum())} of {close.numel()} entries differ)"
            )
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"{path}: expected a dict with keys {sorted(expected)}, got {got!r:.80}"
        for key in expected:
            found = _first_mismatch(got[key], expected[key], f"{path}[{key!r}]", rtol, atol)
            if found:
                return found
        return None
    if isinstance(expected, Sequence) and not isinstance(expected, str):
        if not isinstance(got, Sequence) or len(got) != len(expected):
            return f"{path}: expected a sequence of length {len(expected)}, got {got!r:.80}"
        for i, (g, e) in enumerate(zip(got, expected)):
            found = _first_mismatch(g, e, f"{path}[{i}]", rtol, atol)
            if found:
                return found
        return None
    if isinstance(expected, float) or isinstance(got, float):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            return f"{path}: expected a Python number, got a tensor: return `loss.item()`"
        if not isinstance(got, Number) or not isinstance(expected, Number):
            return f"{path}: expected a number like {expected!r:.20}, got {type(got).__name__}"
        ok = abs(float(got) - float(expected)) <= atol + rtol * abs(float(expected))
        return None if ok else f"{path}: expected {expected:.6g}, got {got:.6g}"
    return None if got == expected else f"{path}: expected {expected!r}, got {got!r}"


_LIBRARIES = (str(Path(__file__).resolve().parents[1]), str(Path(torch.__file__).parent))


def _where_it_failed(err: BaseException) -> str:
    """`` (line N: code)`` of the innermost frame outside labkit and torch: the learner's line."""
    frames = [
        f
        for f in traceback.extract_tb(err.__traceback__)
        if not str(Path(f.filename).resolve()).startswith(_LIBRARIES)
    ]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (line {frame.lineno}: {(frame.line or '').strip()})"


def _call(function: Callable, args: tuple, calls: int) -> Any:
    if calls == 1:
        return function(*args)
    return [function(*args) for _ in range(calls)]


def _unfinished(result: Any, calls: int) -> bool:
    """A stub's answer: None (or, over several calls, any None)."""
    return result is None if calls == 1 else any(r is None for r in result)


def check_exercise(
    candidate: Callable,
    reference: Callable,
    make_inputs: Callable[[int], tuple] | None = None,
    *,
    trials: int = 3,
    cases: Sequence[Case] = (),
    calls: int = 1,
    observe: Callable[[tuple, Any], Any] | None = None,
    expects: str | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    verbose: bool = True,
) -> bool:
    """Compare ``candidate`` with ``reference`` on hand-made ``cases``, then ``trials`` random inputs.

    Args:
        make_inputs: ``make_inputs(seed) -> args``; called twice per trial with the same seed so
            that each function gets its own fresh copy (models, optimizers) of identical inputs.
            ``None``: only the ``cases``.
        cases: boundary cases (:class:`Case`), checked first.
        calls: call each function this many times in a row on the same inputs and compare the
            list of results (a training step: a forgotten ``zero_grad`` shows from the second
            call on).
        observe: ``observe(args, result) -> what to compare``; default: the return value. For a
            function that changes its inputs (a training step), return the changed state too.
        expects: the signature the exercise asks for, printed with every failure, e.g.
            ``"my_nms(boxes [N, 4], scores [N], iou_threshold) -> int64 indices [K]"``.

    Returns:
        True when every input matches. Otherwise prints one line and returns False: "not
        implemented yet" for an unfinished stub (it returned ``None`` or raised
        ``NotImplementedError``), the first mismatch, or the exception the candidate raised. It
        never raises, so "Run all" goes on.
    """
    observe = observe or (lambda _args, result: result)
    name = getattr(candidate, "__name__", "candidate")
    hint = f"\n  expected: {expects}" if expects else ""

    def report(line: str) -> bool:
        if verbose:
            print(line + hint)
        return False

    inputs: list[tuple[str, Callable[[], tuple]]] = [
        (f"case '{case.label}'", lambda case=case: copy.deepcopy(case.args)) for case in cases
    ]
    if make_inputs is not None:
        inputs += [
            (f"random input {seed}", lambda seed=seed: make_inputs(seed)) for seed in range(trials)
        ]
    for where, fresh in inputs:
        args_ref, args_cand = fresh(), fresh()
        raw_expected = _call(reference, args_ref, calls)
        expected = observe(args_ref, raw_expected)
        try:
            raw = _call(candidate, args_cand, calls)
        except NotImplementedError:
            return report(f"○ {name}: {NOT_IMPLEMENTED} (it raises NotImplementedError)")
        except Exception as err:  # the learner's code: report, don't stop the notebook
            return report(
                f"✗ {name} raised {type(err).__name__}: {err}{_where_it_failed(err)} on {where}"
            )
        if _unfinished(raw, calls) and not _unfinished(raw_expected, calls):
            return report(f"○ {name}: {NOT_IMPLEMENTED} (it returned None; a missing `return`?)")
        try:
            mismatch = _first_mismatch(observe(args_cand, raw), expected, "output", rtol, atol)
        except Exception as err:  # an answer of an unexpected kind: say so, don't crash
            mismatch = f"output of an unexpected kind ({type(err).__name__}: {err})"
        if mismatch:
            return report(f"✗ {name} differs from the reference on {where}: {mismatch}")
    if verbose:
        same = (
            " (it is the reference itself: delete the line that binds it to check your own)"
            if candidate is reference
            else ""
        )
        print(f"✓ {name} matches the reference on {len(inputs)} inputs{same}")
    return True
