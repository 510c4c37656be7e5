"""`make rerun` runs a notebook through papermill with parameters: check that path end to end."""

from pathlib import Path

import nbformat
import papermill

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "00_pytorch_warmup.ipynb"


def test_papermill_injects_parameters_and_runs(tmp_path):
    out = tmp_path / "rerun.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(out),
        parameters={"smoke": True, "seed": 1},
        kernel_name="python3",
        language="python",
        progress_bar=False,
        cwd=str(NOTEBOOK.parent),
    )
    cells = nbformat.read(out, as_version=4).cells
    injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "seed = 1" in injected[0].source
    # the injected cell comes right after the notebook's own parameters cell
    index = cells.index(injected[0])
    assert "parameters" in cells[index - 1].metadata.get("tags", [])
