"""Which trained model a lesson uses: the newest local finished run, else the shipped reference.

The lab ships small reference checkpoints in ``labkit/reference/`` (made by ``make reference``,
``scripts/make_reference.py``), each described in ``labkit/reference/provenance.json``: the config,
commit and command that made it, its CPU time and the figures it reaches. They are ordinary labkit
checkpoints (``load_checkpoint``, ``--init-from``), with their weights stored as fp16 to stay
small. A notebook calls :func:`find_trained` and prints :meth:`ModelSource.describe`, so the learner
always reads which model the lesson runs on, where it lies and how good it is::

    found = find_trained("p20_ddpm", reference="p20_ddpm")
    print(found.describe())   # "reference labkit/reference/p20_ddpm.pt (step 2000; ...)"

Topic-free: this module reads run folders and JSON only, never a phase package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.utils.checkpoint import CheckpointError, list_checkpoints
from labkit.utils.runs import RUNS_DIR, read_status

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"
PROVENANCE = REFERENCE_DIR / "provenance.json"


def provenance(path: Path = PROVENANCE) -> dict[str, dict[str, Any]]:
    """Every reference's record, by name (``{}`` when the file is missing)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def reference_record(name: str) -> dict[str, Any]:
    """The provenance record of reference ``name`` (``file``, ``config``, ``commit``,
    ``command``, ``cpu_seconds``, ``figures``, ...); ``CheckpointError`` naming the known ones."""
    records = provenance()
    if name not in records:
        raise CheckpointError(
            f"No reference '{name}' in {PROVENANCE} (known: {', '.join(records) or 'none'}). "
            f"Regenerate the references with `make reference`."
        )
    return records[name]


def reference_checkpoint(name: str) -> Path:
    """The file of reference ``name``; ``CheckpointError`` when it is not there."""
    path = REFERENCE_DIR / reference_record(name)["file"]
    if not path.is_file():
        raise CheckpointError(
            f"Reference '{name}' is listed in {PROVENANCE} but {path} is missing. Restore it "
            f"with `git checkout -- {path}` or regenerate it with `make reference`."
        )
    return path


def newest_finished_run(experiment: str, runs_dir: str | Path = RUNS_DIR) -> Path | None:
    """The newest run folder of ``runs_dir/<experiment>/`` whose ``status.json`` says
    ``finished`` and that holds a checkpoint; None when there is none. Run folder names start
    with their time stamp, so the newest sorts last."""
    folder = Path(runs_dir) / experiment
    if not folder.is_dir():
        return None
    for run in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True):
        if read_status(run).get("status") == "finished" and list_checkpoints(run / "checkpoints"):
            return run
    return None


def last_eval(run_dir: Path) -> dict[str, float]:
    """The last value of each ``eval/*`` metric in ``run_dir/metrics.jsonl`` (``{}``: none)."""
    figures: dict[str, float] = {}
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return figures
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        figures |= {k: v for k, v in row.items() if k.startswith("eval/")}
    return figures


@dataclass
class ModelSource:
    """Where a lesson's trained model comes from.

    ``checkpoint``: the file to load; ``source``: ``"local run"`` or ``"reference"``;
    ``figures``: what it reaches (a run's last ``eval/*`` metrics, or the reference's measured
    figures); ``record``: the reference's provenance record (``{}`` for a local run).
    """

    checkpoint: Path
    source: str
    figures: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    def describe(self, keys: tuple[str, ...] | None = None) -> str:
        """One line: source, path (relative to the repository when inside it), figures."""
        root = REFERENCE_DIR.parents[1]
        path = self.checkpoint.resolve()
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        figures = {k: v for k, v in self.figures.items() if keys is None or k in keys}
        text = ", ".join(f"{k} {_fmt(v)}" for k, v in figures.items())
        return f"{self.source} {shown}" + (f" ({text})" if text else "")


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def find_trained(
    experiment: str, runs_dir: str | Path = RUNS_DIR, reference: str | None = None
) -> ModelSource:
    """The newest local finished run of ``experiment`` (its newest checkpoint), else the shipped
    reference ``reference`` (default: named like the experiment).

    Raises:
        CheckpointError: no finished local run and no such reference.
    """
    run = newest_finished_run(experiment, runs_dir)
    if run is not None:
        return ModelSource(list_checkpoints(run / "checkpoints")[-1], "local run", last_eval(run))
    name = reference or experiment
    record = reference_record(name)
    return ModelSource(
        reference_checkpoint(name), "reference", dict(record.get("figures", {})), record
    )
