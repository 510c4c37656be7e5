"""``python -m labkit.runs``: an index of the run folders, and two runs side by side.

    python -m labkit.runs [--runs-dir runs] [--markdown] [--stale-minutes 30]
    python -m labkit.runs compare RUN_A RUN_B [--runs-dir runs]

The index has one row per run folder (any folder under ``--runs-dir`` holding a
``config.yaml``), read from what the CLI wrote there (README, "Run headless"):

- ``config.yaml``: phase, experiment, seed, and the keys that differ from the experiment's
  shipped config (``labkit/configs/<experiment>.yaml``, with the phase schema's defaults filled
  in, so a key the schema added is no difference); after a resume, its newest ``config.*.yaml``;
- ``env.json``: the git commit; ``metrics.jsonl``: the last value of each ``eval/*`` key;
- ``checkpoints/``: the newest ``step_*.pt``; ``status.json``: how the run ended.

Status is ``status.json``'s word (running, finished, stopped, diverged, failed), except that a
run still marked "running" whose process is gone is **crashed** (``kill -9``, power loss). It is
known gone when ``status.json`` records a ``pid`` on this host that no longer exists; without a
pid, when nothing in the folder was written for ``--stale-minutes`` (a live run writes metrics,
TensorBoard events or checkpoints far more often). A folder without ``status.json`` (made before
the CLI wrote one, or not by the CLI) is "unknown".

``compare A B`` prints the config keys in which two runs differ and their final metrics, and
saves their metric curves side by side as ``<runs-dir>/compare/<A>_vs_<B>.png`` (never into a
run folder: what is there is what ran). ``--markdown`` prints the index as list items to paste
into LEARNING.md's "Links" section. A run is named by
its folder path or by any unique part of its folder name.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labkit.utils.checkpoint import list_checkpoints
from labkit.utils.config import load_config
from labkit.utils.runs import RUNS_DIR, STAMP_FORMAT, flatten, process_alive, read_status

STALE_MINUTES = 30.0


class RunNotFound(ValueError):
    """A run name that matches no run folder, or more than one; the message lists them."""


@dataclass
class RunInfo:
    """What the index knows about one run folder."""

    path: Path
    phase: str | None
    experiment: str
    seed: Any
    date: str  # "YYYY-mm-dd HH:MM"
    commit: str | None
    status: str  # running finished stopped diverged failed crashed unknown
    status_note: str  # why "crashed", how often resumed, the error's first words
    step: int | None  # the last step in metrics.jsonl
    checkpoint: Path | None  # the newest checkpoints/step_*.pt
    final: dict[str, float] = field(default_factory=dict)  # last value of each eval/* key
    changes: dict[str, tuple[Any, Any]] | None = None  # key -> (shipped, this run); None: unknown
    config: dict[str, Any] = field(default_factory=dict)  # flattened


# ---------------------------------------------------------------------------------------------
# Reading one run folder


def find_runs(runs_dir: str | Path) -> list[Path]:
    """Every folder under ``runs_dir`` that holds a ``config.yaml``, oldest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    folders = {p.parent for p in root.rglob("config.yaml") if "checkpoints" not in p.parts}
    return sorted(folders, key=lambda p: (run_date(p), str(p)))


def run_date(path: Path) -> str:
    """``YYYY-mm-dd HH:MM`` from the folder name's time stamp, else from config.yaml's mtime."""
    try:
        stamp = time.strptime(path.name[:15], STAMP_FORMAT)
    except ValueError:
        stamp = time.localtime((path / "config.yaml").stat().st_mtime)
    return time.strftime("%Y-%m-%d %H:%M", stamp)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file as a dict; ``{}`` when missing, unreadable, or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):  # ValueError: bad JSON, or bytes that are not UTF-8
        return {}
    return value if isinstance(value, dict) else {}


def metric_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of ``path/metrics.jsonl``; a line cut short by a crash (``kill -9`` mid-write)
    is skipped rather than failing the whole index."""
    try:
        lines = (path / "metrics.jsonl").read_text(errors="replace").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [row for row in rows if isinstance(row, dict) and isinstance(row.get("step"), int)]


def newest_config(path: Path) -> Path:
    """``config.yaml``, or the newest ``config.resume<step>.yaml`` a resume wrote."""
    return max(path.glob("config*.yaml"), key=lambda p: p.stat().st_mtime)


@functools.cache
def shipped_config(experiment: str) -> dict[str, Any] | None:
    """``labkit/configs/<experiment>.yaml`` flattened, with its phase's schema defaults filled in
    (the CLI saves the checked config, which holds them); None when there is no such config."""
    try:
        cfg = load_config(experiment)
    except Exception:  # a run from a YAML file outside labkit/configs/
        return None
    try:
        from labkit.registry import task_module

        cfg = task_module(cfg["phase"]).check(cfg)
    except Exception:  # an unknown phase, a schema error: compare with the file as it is
        pass
    return flatten(cfg)


def config_changes(cfg: dict[str, Any]) -> dict[str, tuple[Any, Any]] | None:
    """``{key: (shipped value, this run's value)}`` for every flattened key that differs."""
    shipped = shipped_config(str(cfg.get("experiment")))
    if shipped is None:
        return None
    ours = flatten(cfg)
    missing = "(absent)"
    return {
        key: (shipped.get(key, missing), ours.get(key, missing))
        for key in sorted(set(shipped) | set(ours))
        if shipped.get(key, missing) != ours.get(key, missing)
    }


def final_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged value of each ``eval/*`` key."""
    final = {}
    for row in rows:
        final.update({k: v for k, v in row.items() if k.startswith("eval/")})
    return final


def _newest_write(path: Path) -> float:
    return max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0)


def run_status(path: Path, stale_minutes: float = STALE_MINUTES) -> tuple[str, str]:
    """``(status, note)`` by the rule in the module docstring."""
    record = read_status(path)
    status = record.get("status")
    if status is None:
        exists = (path / "status.json").exists()
        return "unknown", "status.json unreadable" if exists else "no status.json"
    if status != "running":
        message = str(record.get("message", "")).split(". ")[0]
        return status, message[:80]
    pid, host = record.get("pid"), record.get("host")
    if isinstance(pid, int) and host == socket.gethostname():
        if process_alive(pid):
            return "running", f"pid {pid}"
        return "crashed", f"process {pid} is gone"
    idle = (time.time() - _newest_write(path)) / 60
    if idle > stale_minutes:
        return "crashed", f"marked running, nothing written for {idle:.0f} min"
    return "running", f"last write {idle:.0f} min ago"


def read_run(path: str | Path, stale_minutes: float = STALE_MINUTES) -> RunInfo:
    """Everything the index shows about the run in ``path``."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(newest_config(path).read_text())
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8
        cfg = None
    readable = isinstance(cfg, dict)
    cfg = cfg if readable else {}
    env = _read_json(path / "env.json")
    rows = metric_rows(path)
    status, note = run_status(path, stale_minutes)
    resumes = len(list(path.glob("config.resume*.yaml")))
    notes = [note] if note else []
    if resumes:
        notes.append(f"resumed {resumes}x")
    if not readable:
        notes.append("config.yaml unreadable")
    checkpoints = list_checkpoints(path / "checkpoints")
    return RunInfo(
        path=path,
        phase=cfg.get("phase"),
        experiment=str(cfg.get("experiment", path.parent.name)),
        seed=cfg.get("seed"),
        date=run_date(path),
        commit=env.get("git_commit"),
        status=status,
        status_note="; ".join(notes),
        step=max((row.get("step", 0) for row in rows), default=None),
        checkpoint=checkpoints[-1] if checkpoints else None,
        final=final_metrics(rows),
        changes=config_changes(cfg) if readable else None,
        config=flatten(cfg),
    )


# ---------------------------------------------------------------------------------------------
# The index


def fmt(value: Any) -> str:
    """A config or metric value, short: floats to 4 significant digits, lists as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def changes_text(run: RunInfo) -> str:
    if run.changes is None:
        return "(no shipped config to compare with)"
    return " ".join(f"{k}={fmt(v)}" for k, (_, v) in run.changes.items()) or "(defaults)"


def metrics_text(run: RunInfo) -> str:
    return " ".join(f"{k.removeprefix('eval/')}={fmt(v)}" for k, v in run.final.items()) or "-"


def table(header: list[str], rows: list[list[str]], width: int | None = None) -> str:
    """Left-aligned columns; the last one is not padded (it may be long). With ``width``, each
    line is cut to that many characters (an ellipsis marks the cut)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]
        line = "  ".join(cells).rstrip()
        if width is not None and len(line) > width:
            line = line[: width - 1] + "…"
        lines.append(line)
    return "\n".join(lines)


INDEX_WIDTH = 120  # characters: the index fits a common terminal; --wide shows every column whole


def index_table(runs: list[RunInfo], width: int | None = INDEX_WIDTH) -> str:
    """The index: one row per run, cut to ``width`` characters. With ``width=None`` (``--wide``)
    whole rows with every column; otherwise the columns that tell runs apart (the folder name
    already holds the date and the seed)."""
    wide = width is None
    header = ["run", "phase", "status", "date", "seed", "commit", "step", "ckpt", "eval", "changes"]
    keep = range(len(header)) if wide else [0, 2, 6, 7, 8, 9]
    rows = []
    for run in runs:
        status = f"{run.status} ({run.status_note})" if run.status_note else run.status
        ckpt = str(int(run.checkpoint.stem.split("_")[1])) if run.checkpoint else "-"
        row = [
            f"{run.experiment}/{run.path.name}",
            str(run.phase),
            status,
            run.date,
            fmt(run.seed),
            run.commit or "-",
            fmt(run.step) if run.step is not None else "-",
            ckpt,
            metrics_text(run),
            changes_text(run),
        ]
        rows.append([row[i] for i in keep])
    return table([header[i] for i in keep], rows, width)


REPO = Path(__file__).resolve().parents[1]


def _link_path(path: Path) -> str:
    """``path`` relative to the repository root, where LEARNING.md is: the link resolves from
    LEARNING.md in this clone whether ``--runs-dir`` was given relative or absolute."""
    return Path(os.path.relpath(path.resolve(), REPO)).as_posix()


def markdown_lines(runs: list[RunInfo]) -> list[str]:
    """One list item per run, for LEARNING.md's "Links" section. Run folders are git-ignored,
    so each is marked local: the link works in this clone only (the config and commit in the
    line are what make the run reproducible elsewhere)."""
    lines = []
    for run in runs:
        step = f" at step {run.step}" if run.step is not None else ""
        lines.append(
            f"- [{run.experiment} {run.path.name}]({_link_path(run.path)}) (local run, not in "
            f"git): {run.status}{step}; {metrics_text(run)}; changes: {changes_text(run)}; "
            f"commit {run.commit or '-'}"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# compare A B


def resolve_run(name: str, runs_dir: str | Path) -> Path:
    """A run folder from a path or from a unique part of a folder name under ``runs_dir``."""
    path = Path(name)
    if (path / "config.yaml").is_file():
        return path
    matches = [p for p in find_runs(runs_dir) if name in p.name or name == str(p)]
    if len(matches) == 1:
        return matches[0]
    found = "matches " + ", ".join(str(p) for p in matches) if matches else "matches no run"
    raise RunNotFound(
        f"'{name}' {found} under {runs_dir}. Name a run by its folder path or by a part "
        f"of its folder name that only it has (list them with `python -m labkit.runs`)."
    )


def compare_table(a: RunInfo, b: RunInfo) -> str:
    """Config keys that differ between the runs, then their status and final metrics."""
    header = ["", f"A: {a.path.name}", f"B: {b.path.name}"]
    rows = [
        ["status", a.status, b.status],
        ["step", fmt(a.step), fmt(b.step)],
        ["commit", a.commit or "-", b.commit or "-"],
    ]
    missing = "(absent)"
    for key in sorted(set(a.config) | set(b.config)):
        left, right = a.config.get(key, missing), b.config.get(key, missing)
        if left != right:
            rows.append([key, fmt(left), fmt(right)])
    for key in sorted(set(a.final) | set(b.final)):
        rows.append([key, fmt(a.final.get(key, "-")), fmt(b.final.get(key, "-"))])
    return table(header, rows)


def metric_curves(run: RunInfo) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` for every numeric key in the run's metrics.jsonl."""
    rows = metric_rows(run.path)
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                curves.setdefault(key, []).append((row["step"], value))
    return curves


def curve_figure(a: RunInfo, b: RunInfo):
    """A matplotlib figure: one panel per metric key of either run, both runs' curves in each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"A": (a, metric_curves(a)), "B": (b, metric_curves(b))}
    keys = sorted(set(runs["A"][1]) | set(runs["B"][1])) or ["(no metrics)"]
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for label, (run, curves) in runs.items():
            if curves.get(key):
                steps, values = zip(*curves[key])
                marker = "." if len(steps) < 30 else None
                ax.plot(steps, values, marker=marker, label=f"{label}: {run.path.name}")
        ax.set(title=key, xlabel="step", ylabel=key)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(f"{a.experiment}: A = {a.path.name} vs B = {b.path.name}", fontsize=10)
    fig.tight_layout()
    return fig


def compare(a_name: str, b_name: str, runs_dir: str | Path = RUNS_DIR) -> tuple[str, Path | str]:
    """The console table and the PNG of both runs' curves, saved as
    ``<runs_dir>/compare/<A>_vs_<B>.png`` (never inside a run folder: what is there is what
    ran); when it cannot be written, the reason instead of the path."""
    a = read_run(resolve_run(a_name, runs_dir))
    b = read_run(resolve_run(b_name, runs_dir))
    import matplotlib.pyplot as plt

    fig = curve_figure(a, b)
    png = Path(runs_dir) / "compare" / f"{a.path.name}_vs_{b.path.name}.png"
    try:
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=100)
    except OSError as err:
        return compare_table(a, b), f"not saved ({png}: {err.strerror or err})"
    finally:
        plt.close(fig)
    return compare_table(a, b), png


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    runs_dir_help = "the folder the runs are in (default: runs)"
    if argv[:1] == ["compare"]:
        parser = argparse.ArgumentParser(
            prog="python -m labkit.runs compare",
            description="Two runs side by side: the config keys in which they differ, their final "
            "metrics, and their curves as <runs-dir>/compare/<A>_vs_<B>.png.",
        )
        parser.add_argument("run_a", help="a run folder, or a part of its name only it has")
        parser.add_argument("run_b", help="the other run, named the same way")
        parser.add_argument("--runs-dir", default=str(RUNS_DIR), help=runs_dir_help)
        args = parser.parse_args(argv[1:])
        try:
            text, png = compare(args.run_a, args.run_b, args.runs_dir)
        except RunNotFound as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(text)
        print(f"curves: {png}")
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m labkit.runs",
        usage="%(prog)s [--runs-dir DIR] [--markdown] [--wide] [--stale-minutes M]\n"
        "       %(prog)s compare RUN_A RUN_B [--runs-dir DIR]",
        description="An index of the run folders: status (crashed runs too), seed, commit, last "
        "step and checkpoint, final eval/* metrics, and the config keys that differ from the "
        "shipped config. 'compare RUN_A RUN_B' shows two runs side by side.",
    )
    parser.add_argument("--runs-dir", default=str(RUNS_DIR), help=runs_dir_help)
    parser.add_argument(
        "--markdown", action="store_true", help="list items with links for LEARNING.md's Links"
    )
    parser.add_argument(
        "--wide", action="store_true", help=f"whole rows (default: cut at {INDEX_WIDTH} columns)"
    )
    parser.add_argument(
        "--stale-minutes",
        type=float,
        default=STALE_MINUTES,
        help="a run marked running with no pid that wrote nothing for this long is crashed "
        f"(default {STALE_MINUTES:g})",
    )
    args = parser.parse_args(argv)
    runs = [read_run(p, args.stale_minutes) for p in find_runs(args.runs_dir)]
    if not runs:
        print(f"no runs under {args.runs_dir}")
    elif args.markdown:
        print("\n".join(markdown_lines(runs)))
    else:
        print(index_table(runs, None if args.wide else INDEX_WIDTH))
    return 0


if __name__ == "__main__":
    sys.exit(main())
