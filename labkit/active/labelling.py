"""Who labels the frames a selector chose: the pool's ground truth, or a person.

:class:`SimulatedLabeller` reveals the pool's ground truth (the experiment's default: a perfect,
instant annotator). :class:`ManualLabeller` asks a person: the loop writes the ids it needs into
``to_label.json`` and stops (:class:`LabelsPending`) until ``labels.json`` holds their boxes;
rerun with resume to go on. Both return ``{id: {"boxes": [K, 4] xyxy pixels, "labels": [K]}}``,
P10's target format. Used by ``labkit.active.loop``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from labkit.data.common import DataError

__all__ = ["LabelsPending", "SimulatedLabeller", "ManualLabeller", "TargetsOf"]


class LabelsPending(DataError):
    """A person has frames to label before the loop can go on; the message says where (a
    ``DataError``: the CLI prints it and stops; resume once the labels are in)."""


class SimulatedLabeller:
    """Reveals the pool's ground truth (the experiment's default: a perfect, instant annotator)."""

    def __init__(self, pool: Dataset):
        self.pool = pool

    def targets(self, ids: list[int]) -> dict[int, dict[str, Tensor]]:
        return {i: self.pool[i][1] for i in ids}


class ManualLabeller:
    """Labels from a person: needed ids go out in ``to_label.json``, boxes come back in
    ``labels.json`` = ``{"<id>": {"boxes": [[x1, y1, x2, y2], ...], "labels": [class, ...]}}``
    (pixels, P10's class indices). Frames already labelled there are never asked for again."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def labels_file(self) -> Path:
        return self.folder / "labels.json"

    def targets(self, ids: list[int]) -> dict[int, dict[str, Tensor]]:
        known = json.loads(self.labels_file.read_text()) if self.labels_file.exists() else {}
        missing = [i for i in ids if str(i) not in known]
        if missing:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "to_label.json").write_text(json.dumps({"ids": missing}))
            run_dir = self.folder.parent.parent  # <run>/loops/<selector>_s<seed>
            raise LabelsPending(
                f"{len(missing)} frames need labels: their ids are in {self.folder / 'to_label.json'}. "
                f"Add their boxes to {self.labels_file}, then continue the run: "
                f"python -m labkit.train --resume {run_dir}"
            )
        return {
            i: {
                "boxes": torch.tensor(known[str(i)]["boxes"], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(known[str(i)]["labels"], dtype=torch.int64),
            }
            for i in ids
        }


class TargetsOf(Dataset):
    """Pool images with targets from a labeller (a person's boxes may differ from the truth)."""

    def __init__(self, pool: Dataset, targets: dict[int, dict[str, Tensor]]):
        self.pool, self.labels = pool, targets

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, index: int):
        return self.pool[index][0], self.labels[index]
