"""The library's shape: dependencies point one way, and every registered phase is complete.

notebooks -> phase packages -> trainers -> utils. Shared code (utils, data, trainers) knows no
phase; a phase imports another only where it builds on it (BUILDS_ON). The check reads the
imports with ``ast``, so it fails on the offending line before anything runs.
"""

import ast
from pathlib import Path

import pytest

from labkit.registry import PHASES, task_module
from labkit.utils.config import available_configs, load_config

LABKIT = Path(__file__).resolve().parents[1] / "labkit"
SHARED = {"utils", "data", "trainers"}
# shared layer -> the shared layers it may import
SHARED_ALLOWED = {"utils": {"utils"}, "data": {"utils", "data"}, "trainers": SHARED}
# phase package -> the other phase packages it builds on
BUILDS_ON = {"active": {"detection"}, "diffusion": {"warmup"}}
PHASE_PACKAGES = {name.split(".")[1] for name in PHASES.values()}


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
        allowed = SHARED | BUILDS_ON.get(package, set())
    assert imported <= allowed, (
        f"{path.relative_to(LABKIT.parent)} imports labkit.{sorted(imported - allowed)}; "
        f"labkit.{package} may import only labkit.{sorted(allowed)}"
    )


def test_the_checker_catches_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from labkit.detection.nms import nms\nimport labkit.rl.envs\n")
    assert labkit_imports(bad) == {"detection", "rl"}


@pytest.mark.parametrize("phase", list(PHASES))
def test_every_phase_has_run_checks_a_config_and_a_notebook(phase):
    module = task_module(phase)
    assert callable(module.run) and module.DONE_CHECKS
    configs = [name for name in available_configs() if load_config(name).get("phase") == phase]
    assert configs, f"no config in labkit/configs names phase {phase}"
    notebooks = list((LABKIT.parent / "notebooks").glob(f"{phase[1:]}_*.py"))
    assert notebooks, f"no notebooks/{phase[1:]}_*.py for {phase}"


def test_every_phase_package_is_registered():
    packages = {p.name for p in LABKIT.iterdir() if (p / "task.py").is_file()}
    assert packages == PHASE_PACKAGES
