"""The library's shape: dependencies point one way, and every registered phase meets the contract.

notebooks -> phase packages -> trainers -> utils. Shared code (utils, data, trainers) knows no
phase; a phase imports another only where it builds on it (``Phase.builds_on`` in the registry,
the only table of phases). The import check reads the imports with ``ast``, so it fails on the
offending line before anything runs.
"""

import ast
import inspect
import re
from pathlib import Path

import pytest

from labkit.registry import PHASES, PhaseChecks, PhaseTask, get_phase
from labkit.utils.config import available_configs, load_config

ROOT = Path(__file__).resolve().parents[1]
LABKIT = ROOT / "labkit"
SHARED = {"utils", "data", "trainers"}
# shared layer -> the shared layers it may import
SHARED_ALLOWED = {"utils": {"utils"}, "data": {"utils", "data"}, "trainers": SHARED}
PHASE_PACKAGES = {phase.package for phase in PHASES.values()}
MAX_TASK_LINES = 300
RUN_KEYWORDS = ["resume_from", "init_from", "progress", "stop_after"]


def builds_on(package: str) -> set[str]:
    """The phase packages ``package`` may import: those of its phase's ``builds_on``."""
    phase = next((p for p in PHASES.values() if p.package == package), None)
    return {get_phase(name).package for name in phase.builds_on} if phase else set()


def labkit_imports(path: Path) -> set[str]:
    """Second-level names (``utils``, ``detection``, ...) of every labkit module ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("labkit."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("labkit.")}
    return found


def package_files() -> list[tuple[str, Path]]:
    return [(p.relative_to(LABKIT).parts[0], p) for p in LABKIT.glob("*/*.py")]


@pytest.mark.parametrize("package,path", package_files(), ids=lambda v: str(v)[-40:])
def test_imports_point_one_way(package, path):
    imported = labkit_imports(path) - {package}
    if package in SHARED:
        allowed = SHARED_ALLOWED[package]
    else:
        allowed = SHARED | builds_on(package)
    assert imported <= allowed, (
        f"{path.relative_to(ROOT)} imports labkit.{sorted(imported - allowed)}; "
        f"labkit.{package} may import only labkit.{sorted(allowed)}"
    )


def test_the_checker_catches_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from labkit.detection.nms import nms\nimport labkit.rl.envs\n")
    assert labkit_imports(bad) == {"detection", "rl"}


def test_builds_on_names_registered_phases_only():
    for phase in PHASES.values():
        assert set(phase.builds_on) <= set(PHASES) - {phase.name}, phase.name


@pytest.mark.parametrize("name", list(PHASES))
def test_task_module_meets_the_phase_contract(name):
    task = get_phase(name).task
    assert isinstance(task, PhaseTask), f"labkit.{get_phase(name).package}.task misses a part"
    params = inspect.signature(task.run).parameters
    assert list(params)[:3] == ["cfg", "run_dir", "device"]
    for keyword in RUN_KEYWORDS:
        assert (
            keyword in params and params[keyword].kind is inspect.Parameter.KEYWORD_ONLY
        ), f"{name}: run(...) needs the keyword-only parameter {keyword}"
    assert not hasattr(task, "DISTRIBUTED"), "the registry's Phase.distributed says it"
    assert not hasattr(task, "DONE_CHECKS"), "done checks live in the phase's done.py"


@pytest.mark.parametrize("name", list(PHASES))
def test_done_module_meets_the_phase_contract(name):
    done = get_phase(name).done
    assert isinstance(done, PhaseChecks)
    assert done.DONE_CHECKS and all(callable(check) for check in done.DONE_CHECKS)


@pytest.mark.parametrize("name", list(PHASES))
def test_task_module_is_short_and_keeps_no_result_caches(name):
    package = LABKIT / get_phase(name).package
    task = package / "task.py"
    lines = len(task.read_text().splitlines())
    assert lines <= MAX_TASK_LINES, f"{task.relative_to(ROOT)}: {lines} lines (build + run only)"
    for path in (task, package / "done.py"):
        for node in ast.parse(path.read_text()).body:  # module level only
            value = getattr(node, "value", None)
            empty = isinstance(value, (ast.Dict, ast.List)) and not getattr(
                value, "keys", getattr(value, "elts", None)
            )
            assert not empty, (
                f"{path.relative_to(ROOT)}:{node.lineno}: a module-global container filled at "
                f"run time; cache with functools.cache or pass the result explicitly"
            )


def test_every_phase_package_is_registered():
    packages = {p.name for p in LABKIT.iterdir() if (p / "task.py").is_file()}
    assert packages == PHASE_PACKAGES


@pytest.mark.parametrize("name", list(PHASES))
def test_registry_lists_the_phase_configs(name):
    found = {c for c in available_configs() if load_config(c).get("phase") == name}
    assert found == set(get_phase(name).configs)


# What adding a phase touches, with where it is: README's "Adding a phase" names these, in order.
def touched_places(name: str) -> dict[str, list[Path]]:
    phase = get_phase(name)
    return {
        "package": [LABKIT / phase.package / "task.py", LABKIT / phase.package / "done.py"],
        "registry entry": [LABKIT / "registry.py"],
        "config": [LABKIT / "configs" / f"{c}.yaml" for c in phase.configs],
        "notebook": [phase.notebook_path],
        "tests": sorted((ROOT / "tests").glob(f"test_{phase.package}_*.py")),
        "roadmap row": [ROOT / "ROADMAP.md"],
        "issue template": sorted((ROOT / ".github" / "ISSUE_TEMPLATE").glob(f"{name}_*.md")),
    }


@pytest.mark.parametrize("name", list(PHASES))
def test_every_place_a_phase_touches_exists(name):
    for what, paths in touched_places(name).items():
        assert paths and all(p.is_file() for p in paths), f"{name}: {what} missing"
    roadmap = (ROOT / "ROADMAP.md").read_text()
    assert re.search(rf"^\| {name.upper()} \|", roadmap, re.MULTILINE), f"no ROADMAP row {name}"
    if "check_exercise(" in get_phase(name).notebook_path.read_text():
        assert (ROOT / "tests" / "wrong_answers" / f"{get_phase(name).package}.py").is_file()


def test_readme_lists_every_place_a_phase_touches():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("**Adding a phase**", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\d+\. \*\*([a-z ]+)\*\*", section, re.MULTILINE)
    assert listed == list(touched_places("p00")), listed
