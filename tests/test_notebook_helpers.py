"""labkit.utils.notebook: a fresh run folder for every "Run all", and papermill parameters checked
with one clear message (what `-p steps abc` or `-p steps -5` must print)."""

import ast
import re
from pathlib import Path

import pytest

from labkit.utils.config import ConfigError
from labkit.utils.notebook import (
    Param,
    ParameterError,
    check_parameters,
    matching_run,
    notebook_run_dir,
    save_settings,
)

SPEC = {
    "steps": Param(int, low=1),
    "lr": Param(float, low=0, low_open=True, high=1),
    "smoke": Param(bool),
    "seeds": Param(list, item=int, low=0, min_len=1),
    "full_run": Param(str, choices=("auto", "none"), other="a run folder"),
}
GOOD = {"steps": 10, "lr": 0.1, "smoke": False, "seeds": [0, 1], "full_run": "auto"}


def test_two_run_alls_get_two_fresh_folders(tmp_path):
    a = notebook_run_dir("p40_active_notebook", 3, root=tmp_path)
    b = notebook_run_dir("p40_active_notebook", 3, root=tmp_path)
    assert a != b and a.is_dir() and b.is_dir() and not any(a.iterdir())
    assert a.parent == tmp_path / "p40_active_notebook"
    assert re.fullmatch(r"\d{8}-\d{6}_notebook_s3(-\d+)?", a.name)


def test_good_parameters_pass():
    check_parameters(GOOD, SPEC)
    check_parameters({**GOOD, "lr": 1, "full_run": "runs/p40_active/x"}, SPEC)  # int for float


@pytest.mark.parametrize(
    "name, value",
    [
        ("steps", "abc"),  # papermill's -p steps abc
        ("steps", -5),
        ("steps", 0),
        ("steps", 2.5),
        ("steps", True),  # a bool is an int in Python, not a step count
        ("lr", 0),  # low_open
        ("lr", 2.0),
        ("lr", float("nan")),
        ("smoke", 1),
        ("seeds", []),
        ("seeds", [0, -1]),
        ("seeds", 3),
        ("full_run", ""),
        ("full_run", 5),
    ],
)
def test_a_bad_parameter_is_named_with_what_it_takes(name, value):
    with pytest.raises(ParameterError) as info:
        check_parameters({**GOOD, name: value}, SPEC)
    message = str(info.value)
    assert f"{name} = {value!r}" in message and "must be" in message
    assert isinstance(info.value, ConfigError)


def test_every_problem_in_one_paragraph():
    with pytest.raises(ParameterError) as info:
        check_parameters({**GOOD, "steps": "abc", "lr": -5, "typo": 1}, SPEC)
    message = str(info.value)
    assert "\n" not in message
    assert "steps = 'abc' (str) must be an int >= 1" in message
    assert "lr = -5 (int) must be a number > 0 and <= 1" in message
    assert "typo has no spec" in message


def test_ipython_shows_the_message_alone():
    """IPython prints ``_render_traceback_()`` instead of a traceback: one line, no frames."""
    error = ParameterError("steps = -5 must be an int >= 1")
    assert error._render_traceback_() == ["ParameterError: steps = -5 must be an int >= 1"]


def test_descriptions():
    assert SPEC["full_run"].describe() == "'auto', 'none' or a run folder"
    assert SPEC["seeds"].describe() == "a list of at least 1 values, each an int >= 0"
    pair = Param(list, item=int, low=1, min_len=2, max_len=2)
    assert pair.describe() == "a list of 2 values, each an int >= 1"
    assert pair.accepts((1, 4000)) and not pair.accepts((1, 2, 3)) and not pair.accepts([0, 5])


def test_a_result_is_reused_only_with_exactly_its_settings(tmp_path):
    settings = {"trainer": {"max_steps": 80, "lr": 3e-4}, "active": {"seeds": [0, 1, 2]}}
    assert matching_run(tmp_path, settings, "short") is None
    old = notebook_run_dir("p40_active_notebook", 0, root=tmp_path) / "short"
    old.mkdir()
    assert matching_run(tmp_path / "p40_active_notebook", settings, "short") is None  # unfinished
    save_settings(old, settings)
    assert matching_run(tmp_path / "p40_active_notebook", settings, "short") == old
    changed = {**settings, "trainer": {"max_steps": 40, "lr": 3e-4}}  # -p short_steps 40
    assert matching_run(tmp_path / "p40_active_notebook", changed, "short") is None
    assert matching_run(tmp_path / "p40_active_notebook", {**settings, "seed": 1}, "short") is None


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHECKED = [
    "00_pytorch_warmup",
    "30_rl_basics",
    "40_active_learning_detection",
    "50_gaussian_splatting_tiny",
]


@pytest.mark.parametrize("name", CHECKED)
def test_every_parameter_of_the_notebook_is_checked(name):
    """Each name the ``parameters`` cell sets is in the notebook's ``check_parameters`` call
    (a new parameter without a check would let ``-p it abc`` through to a traceback)."""
    source = (NOTEBOOKS / f"{name}.py").read_text()
    cell = source.split('# %% tags=["parameters"]\n', 1)[1].split("\n# %%", 1)[0]
    names = [node.targets[0].id for node in ast.parse(cell).body if isinstance(node, ast.Assign)]
    call = source.split("check_parameters(", 2)[1].split(")  # fmt: skip", 1)[0]
    values, spec = ast.parse("(" + call + ")").body[0].value.elts[:2]
    assert names and sorted(k.arg for k in values.keywords) == sorted(names)
    assert sorted(k.arg for k in spec.keywords) == sorted(names)
