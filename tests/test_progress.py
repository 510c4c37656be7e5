"""Progress bars end finished in a saved notebook: a text bar in a kernel (a widget would be saved
at its first frame, "0 %", when papermill runs the notebook headless)."""

import importlib.util
import io
import os
from pathlib import Path

import nbformat
import papermill
import pytest

from labkit.utils import progress

REPO = Path(__file__).resolve().parents[1]


def load_nbfull():
    spec = importlib.util.spec_from_file_location("nbfull", REPO / "scripts" / "nbfull.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_outside_a_kernel_the_bar_is_a_terminal_bar():
    assert not progress.in_kernel()
    bar = progress.progress_bar(total=3, file=io.StringIO())
    assert type(bar).__module__ == "tqdm.std"
    bar.close()


def test_in_a_kernel_the_text_bar_ends_at_100_percent(monkeypatch, capsys):
    monkeypatch.setattr(progress, "in_kernel", lambda: True)
    with progress.progress_bar(total=50, desc="train") as bar:
        for _ in range(50):
            bar.update(1)
    frames = [f for f in capsys.readouterr().err.replace("\n", "\r").split("\r") if "%|" in f]
    assert frames[0].startswith("train:   0%") and frames[-1].startswith("train: 100%")


def stream(text: str):
    return nbformat.v4.new_output("stream", name="stderr", text=text)


@pytest.mark.parametrize(
    "outputs, unfinished",
    [
        ([stream("\rtrain:   0%|   | 0/4\rtrain: 100%|███| 4/4\n")], 0),
        ([stream("\rtrain:   0%|   | 0/4\rtrain:  50%|█▌ | 2/4\n")], 1),
        # two bars in one output: the first finished, the second cut
        ([stream("\ra: 100%|███| 4/4\n\rb:   0%|   | 0/4\rb:  75%|██▎| 3/4\n")], 1),
        ([stream("no bar here: 40% of the images\n")], 0),
        (
            [
                nbformat.v4.new_output(
                    "display_data",
                    data={
                        "text/plain": "HBox(children=(HTML(value=''), FloatProgress(value=0.0)))"
                    },
                )
            ],
            1,
        ),
    ],
)
def test_nbfull_finds_unfinished_bars(tmp_path, outputs, unfinished):
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run()")
    cell.outputs = outputs
    notebook.cells = [cell]
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook, path)
    assert len(load_nbfull().unfinished_bars(path)) == unfinished


def test_a_headless_notebook_saves_the_loop_bar_finished(tmp_path, monkeypatch):
    """The real path: the loops' bar (LoopPlumbing) in a kernel papermill runs, no frontend."""
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "from labkit.trainers.plumbing import LoopPlumbing\n"
            "with LoopPlumbing(None, total=20, desc='train') as loop:\n"
            "    for _ in range(20):\n"
            "        loop.advance(1, loss='0.1')\n"
        )
    ]
    source, out = tmp_path / "bar.ipynb", tmp_path / "bar-out.ipynb"
    nbformat.write(notebook, source)
    papermill.execute_notebook(
        str(source), str(out), kernel_name="labkit", language="python", progress_bar=False,
        cwd=str(tmp_path),
    )  # fmt: skip
    assert load_nbfull().unfinished_bars(out) == []
    outputs = nbformat.read(out, as_version=4).cells[0].outputs
    saved = "".join(o.get("text", "") for o in outputs)
    assert "train: 100%" in saved, saved[-200:]
    assert os.environ.get("MPLBACKEND") is None
