"""What a finished comparison leaves: the curves, the gap tests and the files that hold them.

``labkit.active.task.run`` calls :func:`write_report` once every loop has run all its rounds:

    run_dir/curves.json    mean ± std curves (mAP@0.5 and recall), AUCs, labels saved, gap tests
    run_dir/curves.png     the mean curves with their seed bands
    run_dir/metrics.jsonl  the mean curves, one row per labelled count (see write_curves)
    run_dir/events.out.*   the same as TensorBoard scalars, x: labelled frames

:func:`load_comparison` reads a finished run folder back without running anything (the
notebook). The arithmetic (AUC, the gap test) lives in ``labkit.active.curves``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.active.curves import format_table, gap_test, plot_curves, summarise
from labkit.active.loop import LoopState
from labkit.utils.config import load_config
from labkit.utils.logging import EVENTS_DIR, get_writer, json_safe

__all__ = ["Comparison", "write_report", "write_curves", "load_comparison"]


@dataclass
class Comparison:
    """What ``run`` returns in ``details``: every loop's state, the curves and the gap tests."""

    states: dict[tuple[str, int], LoopState]
    summary: dict | None = None
    tests: dict[str, dict] = field(default_factory=dict)
    table: str = ""


def write_report(comparison: Comparison, run_dir: Path, step: int) -> None:
    """Curves, gap tests and the table of a finished comparison (into ``comparison``), and
    ``curves.json``, ``curves.png`` and the mean curves (``metrics.jsonl``, TensorBoard events) in ``run_dir``.
    """
    from matplotlib.figure import Figure

    histories = {key: state.history for key, state in comparison.states.items()}
    comparison.summary = summarise(histories, "eval/map50")
    comparison.tests = gap_test(comparison.summary)
    recall = summarise(histories, "eval/recall")
    comparison.table = format_table(comparison.summary, comparison.tests)
    record = {"map50": comparison.summary, "recall": recall, "tests": comparison.tests}
    (run_dir / "curves.json").write_text(json.dumps(_json_keys(record), indent=1))
    figure = Figure(figsize=(6, 4))  # not pyplot: nothing pops up in a notebook or needs a display
    plot_curves(comparison.summary, ax=figure.subplots())
    figure.tight_layout()
    figure.savefig(run_dir / "curves.png", dpi=120)
    write_curves(comparison.summary, run_dir, step)


def write_curves(summary: dict, run_dir: Path, step: int) -> None:
    """The mean curves: ``metrics.jsonl`` rewritten whole, TensorBoard scalars over labels.

    One row per labelled count n, ``{"step": rounds finished, "labelled": n,
    "curve/<selector>/map50_mean": ..., "curve/<selector>/map50_std": ...}``. Every row's
    ``step`` is the run's ``ResumePoint.step``, so the CLI's cut of rows logged after the resume
    point never drops one, and writing the file whole (atomically) leaves no repeats after a
    resume. In TensorBoard the x axis is the number of labelled frames.
    """
    selectors = summary["selectors"]
    labelled = next(iter(selectors.values()))["labelled"]
    rows = []
    for i, n in enumerate(labelled):
        row = {"step": step, "labelled": n}
        for name, entry in selectors.items():
            row[f"curve/{name}/map50_mean"] = entry["mean"][i]
            row[f"curve/{name}/map50_std"] = entry["std"][i]
        rows.append(row)
    tmp = run_dir / ".metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(json_safe(row)) + "\n" for row in rows))
    tmp.replace(run_dir / "metrics.jsonl")
    writer = get_writer(run_dir / EVENTS_DIR)
    try:
        for row in rows:
            for key, value in row.items():
                if key.startswith("curve/"):
                    writer.add_scalar(key, value, row["labelled"])
    finally:
        writer.close()


def _json_keys(value: Any) -> Any:
    """JSON needs string keys: seeds become "0", "1", ..."""
    if isinstance(value, dict):
        return {str(k): _json_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_keys(v) for v in value]
    return value


def load_comparison(run_dir: str | Path) -> Comparison:
    """A finished run folder's loops and curves, without running anything (the notebook)."""
    run_dir = Path(run_dir)
    states = {}
    for path in sorted((run_dir / "loops").glob("*/state.json")):
        state = LoopState.load(path)
        states[(state.selector, state.seed)] = state
    config = run_dir / "config.yaml"  # the run's order of selectors (random first), if known
    order = load_config(config)["active"]["selectors"] if config.is_file() else ["random"]
    rank = {name: i for i, name in enumerate(order)}
    states = dict(sorted(states.items(), key=lambda kv: (rank.get(kv[0][0], len(rank)), kv[0])))
    comparison = Comparison(states)
    histories = {key: state.history for key, state in states.items()}
    comparison.summary = summarise(histories, "eval/map50")
    comparison.tests = gap_test(comparison.summary)
    comparison.table = format_table(comparison.summary, comparison.tests)
    return comparison
