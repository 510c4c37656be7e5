"""The .py notebooks are the source and all git tracks; their .ipynb pairs are built from them
(``make notebooks``, run by ``make setup`` / ``make test`` / ``make lab``) and git-ignored, so
opening, running and saving a notebook in JupyterLab leaves ``git status`` clean."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.py"))


def cells(notebook):
    return [
        (c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in notebook.cells
    ]


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.name)
def test_pair_matches_source(source):
    pair = source.with_suffix(".ipynb")
    assert pair.exists(), f"{pair.name} is missing: run `make notebooks`"
    assert cells(jupytext.read(source)) == cells(
        jupytext.read(pair)
    ), f"{pair.name} has drifted from {source.name}: edit the .py and run `make notebooks`"


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.name)
def test_has_parameters_cell_and_smoke_switch(source):
    notebook = jupytext.read(source)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "one cell tagged 'parameters' (papermill injects after it)"
    assert "smoke" in tagged[0].source and "LABKIT_SMOKE" in source.read_text()


def test_only_the_py_sources_are_tracked():
    tracked = subprocess.run(
        ["git", "ls-files", "notebooks"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [name for name in tracked if name.endswith(".ipynb")]
    assert {f"notebooks/{p.name}" for p in NOTEBOOKS} <= set(tracked)
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "notebooks/00_pytorch_warmup.ipynb"], cwd=ROOT
    )
    assert ignored.returncode == 0, "notebooks/*.ipynb must be git-ignored"


def test_a_jupyter_round_trip_leaves_the_source_unchanged(tmp_path):
    """Open a .py as JupyterLab does (jupytext's contents manager, the repository's pairing
    config), run it (outputs and the kernel's language_info appear), save: the .py is unchanged
    byte for byte, and what changed is the git-ignored .ipynb."""
    from jupytext import TextFileContentsManager

    shutil.copy(ROOT / "pyproject.toml", tmp_path)  # [tool.jupytext]: pairing and filters
    (tmp_path / "notebooks").mkdir()
    source = NOTEBOOKS[0]
    copy = tmp_path / "notebooks" / source.name
    shutil.copy(source, copy)
    manager = TextFileContentsManager(root_dir=str(tmp_path))
    model = manager.get(f"notebooks/{source.name}")
    notebook = model["content"]
    notebook.metadata["language_info"] = {"name": "python", "version": sys.version.split()[0]}
    code = next(c for c in notebook.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    code.execution_count = 1
    manager.save({"type": "notebook", "content": notebook}, f"notebooks/{source.name}")
    assert copy.read_bytes() == source.read_bytes()
    saved = json.loads(copy.with_suffix(".ipynb").read_text())
    assert any(c.get("outputs") for c in saved["cells"])  # the outputs went to the .ipynb


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.name)
def test_the_built_ipynb_opens_in_jupyter(source, tmp_path):
    """The .py names the kernel in its header, as the built .ipynb does: otherwise Jupytext
    refuses to open an .ipynb newer than its differing .py ("is more recent than")."""
    from jupytext import TextFileContentsManager

    assert jupytext.read(source).metadata.get("kernelspec", {}).get("name") == "labkit"
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(source, tmp_path / source.name)
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", "--set-kernel", "labkit",
         source.name], cwd=tmp_path, check=True,
    )  # fmt: skip
    model = TextFileContentsManager(root_dir=str(tmp_path)).get(source.with_suffix(".ipynb").name)
    assert model["type"] == "notebook" and model["content"].cells


def test_setup_makes_jupytext_the_default_viewer_of_py_files():
    settings = Path(sys.prefix) / "etc/jupyter/labconfig/default_setting_overrides.json"
    if not settings.is_file():
        pytest.skip(f"{sys.prefix} was not made by scripts/setup_venv.sh")
    viewers = json.loads(settings.read_text())["@jupyterlab/docmanager-extension:plugin"]
    assert viewers["defaultViewers"]["python"] == "Jupytext Notebook"


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.name)
def test_pair_names_the_lab_kernel(source):
    """Jupyter opens the pair with the kernel `make setup` registers, without asking
    (`make notebooks` writes it into every .ipynb)."""
    expected = {"name": "labkit", "display_name": "Python (labkit)", "language": "python"}
    found = jupytext.read(source.with_suffix(".ipynb")).metadata.get("kernelspec")
    if found is None and source.name[:2] not in ("00", "10", "30"):
        pytest.skip(f"{source.with_suffix('.ipynb').name} has no kernelspec yet: make notebooks")
    assert found == expected, f"{source.with_suffix('.ipynb').name} names {found}: make notebooks"
