"""The exercise checker, and every exercise of the notebooks run with an unfinished stub, a wrong
answer and the reference."""

import contextlib
import importlib.util
import io
import os
import re
from pathlib import Path

import jupytext
import matplotlib.pyplot as plt
import pytest
import torch

from labkit.registry import PHASES
from labkit.utils.exercise import NOT_IMPLEMENTED, Case, check_exercise


def reference(x):
    return x.cumsum(0)


def make_inputs(seed):
    torch.manual_seed(seed)
    return (torch.randn(6),)


def test_reference_passes(capsys):
    assert check_exercise(reference, reference, make_inputs)
    assert "✓" in capsys.readouterr().out


def test_wrong_candidate_reports_first_mismatch(capsys):
    def off_by_one(x):
        out = x.cumsum(0)
        out[3] += 1.0
        return out

    assert not check_exercise(off_by_one, reference, make_inputs)
    assert "output[3]" in capsys.readouterr().out


def test_wrong_shape_and_exceptions_are_reported(capsys):
    assert not check_exercise(lambda x: x[:2], reference, make_inputs)
    assert "expected shape (6,)" in capsys.readouterr().out
    assert not check_exercise(lambda x: 1 / 0, reference, make_inputs)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_a_float64_case_answered_in_float32_is_a_mismatch(capsys):
    def float64_case(seed):
        return (torch.arange(4, dtype=torch.float64) / 3,)

    # the values agree to float32's precision: only the dtype says the precision was lost
    assert not check_exercise(lambda x: x.float().cumsum(0), reference, float64_case)
    assert "expected dtype torch.float64, got torch.float32" in capsys.readouterr().out
    assert check_exercise(lambda x: x.cumsum(0), reference, float64_case)


def test_an_unfinished_stub_is_not_implemented_yet_not_a_crash(capsys):
    def stub(x): ...

    def raises(x):
        raise NotImplementedError

    for unfinished in (stub, raises):
        assert not check_exercise(unfinished, reference, make_inputs, expects="f(x [N]) -> [N]")
        out = capsys.readouterr().out
        assert NOT_IMPLEMENTED in out and "expected: f(x [N]) -> [N]" in out


def test_a_none_inside_an_observed_answer_is_reported_not_raised(capsys):
    # The 00 bug: observe() wraps the step's None loss in a dict, and float(None) crashed.
    def observe(args, loss):
        return {"loss": loss, "x": args[0]}

    assert not check_exercise(lambda x: "1.0", lambda x: 1.0, make_inputs, observe=observe)
    assert "expected a number" in capsys.readouterr().out
    assert not check_exercise(lambda x: None, lambda x: 1.0, make_inputs, observe=observe)
    assert NOT_IMPLEMENTED in capsys.readouterr().out


def test_cases_come_first_and_are_named(capsys):
    def wrong_on_empty(x):
        return x.cumsum(0) if len(x) else torch.zeros(1)

    cases = [Case((torch.zeros(0),), "empty input")]
    assert check_exercise(wrong_on_empty, reference, make_inputs)  # random inputs miss it
    capsys.readouterr()
    assert not check_exercise(wrong_on_empty, reference, make_inputs, cases=cases)
    assert "case 'empty input'" in capsys.readouterr().out


def test_calls_repeats_on_the_same_inputs(capsys):
    # A step that forgets to reset its state only differs on the second call.
    def counter(state):
        state["n"] = state.get("n", 0) + 1
        return state["n"]

    def forgets(state):
        state["n"] = state.get("n", 0) + 1
        return 1

    def inputs(_seed):
        return ({},)

    assert check_exercise(forgets, counter, inputs)
    capsys.readouterr()
    assert not check_exercise(forgets, counter, inputs, calls=2)
    assert "output[1]" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Every exercise in the notebooks, run as a learner would meet it


NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.py"))
# Two ways a notebook ships an exercise: bound to the reference (`my_f = f  # delete this
# line ...`, so Run all shows a pass until the learner deletes the line), or as an unbound stub
# (`def my_f(...): ...`, so Run all shows "not implemented yet" until the learner writes it).
BINDING = re.compile(r"^(my_\w+) = (\w+)  # delete this line.*$", re.MULTILINE)
STUB = re.compile(r"^def (my_\w+)\(", re.MULTILINE)
CHECK_CALL = re.compile(r"^(passed = )?check_exercise\(\s*(my_\w+),\s*(\w+),", re.MULTILINE)


def _load_wrong_answers() -> dict:
    """Every phase's wrong answers, from ``tests/wrong_answers/<package>.py`` (they live with the
    phase: adding a phase with exercises adds its file there)."""
    wrong = {}
    for phase in PHASES.values():
        path = Path(__file__).resolve().parent / "wrong_answers" / f"{phase.package}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"wrong_answers_{phase.package}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            wrong.update(module.WRONG)
    return wrong


WRONG = _load_wrong_answers()  # exercise name -> a wrong version of it


def _magics_commented(source):
    return re.sub(r"^%", "# %", source, flags=re.MULTILINE)  # IPython magics are not Python


def _exercises():
    """(notebook, exercise name, cells before it, exercise cell) for every exercise cell."""
    found = []
    for path in NOTEBOOKS:
        cells = [c.source for c in jupytext.read(path).cells if c.cell_type == "code"]
        for i, cell in enumerate(cells):
            match = CHECK_CALL.search(cell)
            if match and (BINDING.search(cell) or STUB.search(cell)):
                found.append((path.name, match.group(2), i, cell))
    return found


EXERCISES = _exercises()


def test_every_exercise_ships_bound_to_the_reference():
    """One convention in every notebook (the README's): the stub, then a line binding labkit's
    function that the learner deletes, so "Run all" checks a working answer until then."""
    unbound = [f"{nb}: {name}" for nb, name, _, source in EXERCISES if not BINDING.search(source)]
    assert not unbound, f"exercises shipped without the binding line: {unbound}"


def test_every_exercise_has_a_wrong_version_here():
    assert len(EXERCISES) >= 13 and sorted(name for _, name, _, _ in EXERCISES) == sorted(WRONG)


def _self_contained(cell, space):
    """Whether the exercise cell runs on ``space`` alone (no NameError)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(cell, "exercise", "exec"), dict(space))
    except NameError:
        return False
    return True


@pytest.fixture(scope="module")
def namespaces():
    """For each exercise, a namespace to run its cell in, in smoke mode: the notebook's
    parameters and setup cells, or — when the exercise uses more — every code cell before it,
    in order, as "Run all" would."""
    os.environ["LABKIT_SMOKE"] = "1"
    spaces = {}
    try:
        for path in NOTEBOOKS:
            mine = [(name, i, src) for nb, name, i, src in EXERCISES if nb == path.name]
            if not mine:
                continue
            notebook = jupytext.read(path)
            code = [c for c in notebook.cells if c.cell_type == "code"]
            cells = [_magics_commented(c.source) for c in code]
            first = next(
                i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])
            )
            setup = {"__name__": "__main__"}
            with contextlib.redirect_stdout(io.StringIO()):
                for cell in cells[first : first + 2]:  # parameters, then the imports and setup
                    exec(compile(cell, path.name, "exec"), setup)
            space, done = None, 0
            for name, index, source in mine:
                if space is None and _self_contained(source, setup):
                    spaces[(path.name, name)] = dict(setup)
                    continue
                space = space if space is not None else {"__name__": "__main__"}
                with contextlib.redirect_stdout(io.StringIO()):
                    for cell in cells[done:index]:
                        exec(compile(cell, path.name, "exec"), space)
                spaces[(path.name, name)] = dict(space)
                done = index
    finally:
        del os.environ["LABKIT_SMOKE"]
        plt.close("all")
    return spaces


def _bind(source, name, target):
    """The exercise cell with ``name`` bound to ``target`` (a function's name), or, with
    ``target=None``, left for the learner to write: what either shipping convention becomes."""
    if BINDING.search(source):
        return BINDING.sub(f"{name} = {target}" if target else "", source)
    if target is None:  # an unbound stub: as shipped
        return source
    call = CHECK_CALL.search(source).start()  # bind just before the checker runs
    return f"{source[:call]}{name} = {target}\n{source[call:]}"


def _run_exercise(space, source, name, target):
    """Run the exercise cell with ``name`` bound to ``target`` (see _bind); return what it
    printed."""
    cell = _bind(source, name, target)
    out = io.StringIO()
    wrong = {f.__name__: f for f in WRONG.values()}
    with contextlib.redirect_stdout(out):
        exec(compile(cell, "exercise", "exec"), dict(space, **wrong))
    return out.getvalue()


CELLS = [(nb, name, src) for nb, name, _, src in EXERCISES]


@pytest.mark.parametrize("notebook,name,source", CELLS, ids=lambda v: v if len(v) < 40 else "")
def test_exercise_as_shipped_and_unfinished(namespaces, notebook, name, source):
    space = namespaces[(notebook, name)]
    reference_name = CHECK_CALL.search(source).group(3)
    # With the reference bound (as shipped, or as the learner's correct answer): it passes.
    assert "✓" in _run_exercise(space, source, name, reference_name)
    # The stub the learner starts from: a friendly line, no exception, and the signature the
    # exercise expects.
    printed = _run_exercise(space, source, name, None)
    assert NOT_IMPLEMENTED in printed and "expected:" in printed, printed


@pytest.mark.parametrize("notebook,name,source", CELLS, ids=lambda v: v if len(v) < 40 else "")
def test_exercise_with_a_wrong_answer(namespaces, notebook, name, source):
    # A wrong version (including the boundary bug random inputs miss): a clear mismatch.
    printed = _run_exercise(namespaces[(notebook, name)], source, name, WRONG[name].__name__)
    assert "✗" in printed and NOT_IMPLEMENTED not in printed, printed
