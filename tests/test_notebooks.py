"""The .py notebooks are the reviewed source; their .ipynb pairs must not drift from them."""

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.py"))


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


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.name)
def test_pair_is_committed_without_outputs(source):
    pair = jupytext.read(source.with_suffix(".ipynb"))
    assert all(not c.get("outputs") for c in pair.cells if c.cell_type == "code")


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.name)
def test_pair_names_the_lab_kernel(source):
    """Jupyter opens the pair with the kernel `make setup` registers, without asking
    (`make notebooks` writes it into every .ipynb)."""
    expected = {"name": "labkit", "display_name": "Python (labkit)", "language": "python"}
    found = jupytext.read(source.with_suffix(".ipynb")).metadata.get("kernelspec")
    if found is None and source.name[:2] not in ("00", "10", "30"):
        pytest.skip(f"{source.with_suffix('.ipynb').name} has no kernelspec yet: make notebooks")
    assert found == expected, f"{source.with_suffix('.ipynb').name} names {found}: make notebooks"
