"""Exercise checking for the notebooks: run the learner's function and the library's reference
on the same random inputs and report the first place where they disagree.

A notebook exercise cell looks like this::

    def my_train_step(model, optimizer, batch, loss_fn):
        ...                                   # the learner's version
    my_train_step = reference_train_step      # delete this line to check your own
    check_exercise(my_train_step, reference_train_step, make_inputs)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


def _first_mismatch(got: Any, expected: Any, path: str, rtol: float, atol: float) -> str | None:
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{path}: expected a tensor {tuple(expected.shape)}, got {type(got).__name__}"
        if got.shape != expected.shape:
            return f"{path}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
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
        ok = abs(float(got) - float(expected)) <= atol + rtol * abs(float(expected))
        return None if ok else f"{path}: expected {expected:.6g}, got {got:.6g}"
    return None if got == expected else f"{path}: expected {expected!r}, got {got!r}"


def check_exercise(
    candidate: Callable,
    reference: Callable,
    make_inputs: Callable[[int], tuple],
    *,
    trials: int = 3,
    observe: Callable[[tuple, Any], Any] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    verbose: bool = True,
) -> bool:
    """Compare ``candidate`` with ``reference`` on ``trials`` random inputs.

    Args:
        make_inputs: ``make_inputs(seed) -> args``; called twice per trial with the same seed so
            that each function gets its own fresh copy (models, optimizers) of identical inputs.
        observe: ``observe(args, result) -> what to compare``; default: the return value. For a
            function that changes its inputs (a training step), return the changed state too.

    Returns:
        True when every trial matches; prints the first mismatch otherwise.
    """
    observe = observe or (lambda _args, result: result)
    name = getattr(candidate, "__name__", "candidate")
    for seed in range(trials):
        args_ref, args_cand = make_inputs(seed), make_inputs(seed)
        expected = observe(args_ref, reference(*args_ref))
        try:
            got = observe(args_cand, candidate(*args_cand))
        except Exception as err:  # the learner's code: report, don't crash the notebook
            if verbose:
                print(f"✗ {name} raised {type(err).__name__}: {err} (trial {seed})")
            return False
        mismatch = _first_mismatch(got, expected, "output", rtol, atol)
        if mismatch:
            if verbose:
                print(f"✗ {name} differs from the reference on trial {seed}: {mismatch}")
            return False
    if verbose:
        same = " (it is the reference itself)" if candidate is reference else ""
        print(f"✓ {name} matches the reference on {trials} random inputs{same}")
    return True
