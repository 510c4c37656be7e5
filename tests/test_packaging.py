"""Packaging: pyproject.toml declares what labkit imports, and each run records the versions."""

import ast
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
INSTALLED_BY_SETUP = {"torch", "torchvision"}  # scripts/setup_venv.sh picks the wheel index
USED_THROUGH_TORCH = {"tensorboard"}  # torch.utils.tensorboard needs it, labkit never names it


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {normal(re.split(r"[ ;<>=!~\[(]", r)[0]) for r in project["dependencies"]}


def third_party_imports() -> set[str]:
    """Top-level names of every module labkit imports that is not labkit or the standard library."""
    names = set()
    for path in (ROOT / "labkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"labkit", "__future__"}


def test_every_import_of_labkit_is_a_declared_dependency():
    distributions = metadata.packages_distributions()  # import name -> distribution names
    missing = {
        name
        for name in third_party_imports()
        if not {normal(d) for d in distributions.get(name, [name])}
        & (declared() | INSTALLED_BY_SETUP)
    }
    assert not missing, f"labkit imports {sorted(missing)} but pyproject.toml does not declare them"


def test_every_declared_dependency_is_imported():
    distributions = metadata.packages_distributions()
    used = {normal(d) for name in third_party_imports() for d in distributions.get(name, [name])}
    unused = declared() - used - USED_THROUGH_TORCH
    assert not unused, f"declared but never imported: {sorted(unused)}"


def test_requirements_install_labkit_with_its_extras_within_the_constraints():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert "-c constraints.txt" in lines and "-e .[notebooks,dev]" in lines
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line]
    names = {normal(line.split("==")[0]) for line in pins}
    assert {"pydantic", "gymnasium", "mlxtend", "jupytext"} <= names
    assert not names & {"torch", "torchvision"}


def test_env_json_records_every_dependency_version():
    from labkit.utils.runs import package_versions

    versions = package_versions()
    assert set(versions) >= declared() | INSTALLED_BY_SETUP
    assert all(versions[name] for name in ("torch", "pydantic", "gymnasium"))
