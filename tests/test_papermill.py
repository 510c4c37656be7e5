"""`make rerun` runs a notebook through papermill with parameters: run one that way in its smoke
setting, as a learner's Jupyter would (no MPLBACKEND), and check that its plots are in the
output. `make nbtest` checks every notebook's plots the same way (notebooks/conftest.py)."""

import os
from pathlib import Path

import nbformat
import papermill
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# The papermill path is the same for every notebook; one exercises it (each run costs a minute).
DRAWING = ["00_pytorch_warmup"]
IMAGES = ("image/png", "image/gif")


def images_in(cell) -> int:
    return sum(
        1 for output in cell.get("outputs", []) for mime in IMAGES if mime in output.get("data", {})
    )


def draws(source: str) -> bool:
    """A cell that shows a figure or an image when it runs."""
    return "plt.show()" in source or "display(Image(" in source


@pytest.fixture
def learner_env(monkeypatch):
    """The environment of `make lab` / `make rerun`: whatever the test run set, no MPLBACKEND
    (tests/conftest.py sets Agg, which in a kernel would turn every plot into text)."""
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.parametrize("name", DRAWING)
def test_rerun_shows_every_plot(name, tmp_path, learner_env):
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(out),
        parameters={"smoke": True},
        kernel_name="labkit",  # the kernel `make setup` registers and the pairs name
        language="python",
        progress_bar=False,
        cwd=str(NOTEBOOKS),
    )
    cells = nbformat.read(out, as_version=4).cells
    # papermill puts its parameters right after the notebook's own parameters cell
    injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "smoke = True" in injected[0].source
    assert "parameters" in cells[cells.index(injected[0]) - 1].metadata.get("tags", [])

    code = [c for c in cells if c.cell_type == "code"]
    blank = [c.source.strip().splitlines()[0] for c in code if draws(c.source) and not images_in(c)]
    assert not blank, f"{name}: cells that should draw but have no image output: {blank}"
    assert sum(images_in(c) for c in code) >= 3


def test_the_makefile_keeps_matplotlib_s_backend_out_of_jupyter():
    makefile = (NOTEBOOKS.parent / "Makefile").read_text()
    assert "export MPLBACKEND" not in makefile and "MPLBACKEND :=" not in makefile
    assert os.environ.get("MPLBACKEND", "Agg") == "Agg"  # the unit tests themselves: headless
