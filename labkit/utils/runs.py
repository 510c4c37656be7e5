"""Run folders and what a run returns.

Every headless run gets ``runs/<experiment>/<YYYYmmdd-HHMMSS>_<name>_s<seed>/`` holding the
resolved ``config.yaml``, ``env.json`` (versions, device, git commit, seed), ``metrics.jsonl``,
TensorBoard events in ``tb/`` and ``checkpoints/``. The folder and its two description files are
written here, once; the training loops add the metrics and checkpoints.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

RUNS_DIR = Path("runs")


@dataclass
class RunResult:
    """What every phase's ``task.run(...)`` returns, supervised or RL.

    ``summary`` holds the JSON-able headline numbers the CLI prints (always ``step`` and
    ``stopped_by``: ``"max_steps"``, ``"solved"`` or a signal's name); ``details`` the loop's full
    record (a ``TrainResult``, an RL history); ``setup`` the built objects (model, data) for
    notebooks and checks.
    """

    summary: dict[str, Any]
    details: Any = None
    setup: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return self.summary.get("stopped_by") not in ("max_steps", "solved")


def git_commit() -> str | None:
    """The repository's current commit (``+dirty`` with uncommitted changes), or None."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: torch.device, seed: int) -> dict[str, Any]:
    """Versions, platform, device, git commit, seed and command line: ``env.json``."""
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "git_commit": git_commit(),
        "seed": seed,
        "argv": sys.argv,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


def make_run_dir(cfg: dict, root: str | Path = RUNS_DIR) -> Path:
    """A fresh ``<root>/<experiment>/<time>_<name>_s<seed>`` folder (never an existing one)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / cfg["experiment"] / f"{stamp}_{cfg.get('name', 'run')}_s{cfg['seed']}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir, n = base.with_name(f"{base.name}-{n}"), n + 1
    run_dir.mkdir(parents=True)
    return run_dir


def write_run_files(run_dir: Path, cfg: dict, device: torch.device, suffix: str = "") -> None:
    """``config<suffix>.yaml`` and ``env<suffix>.json`` (a resume writes ``.resume<step>`` ones)."""
    (run_dir / f"config{suffix}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    info = environment_info(device, cfg["seed"])
    (run_dir / f"env{suffix}.json").write_text(json.dumps(info, indent=2))
