"""Run folders: their format, their life, and what a run returns. The one home of the format.

Every headless run gets ``runs/<experiment>/<YYYYmmdd-HHMMSS>_<name>_s<seed>/`` holding the
resolved ``config.yaml``, ``env.json`` (versions, device, git commit, seed), ``status.json``
(running, finished, stopped, diverged, failed), ``metrics.jsonl``, TensorBoard events (``events.out.tfevents.*``, in the folder itself)
and ``checkpoints/`` (or a phase's own loop state, e.g. P40's ``loops/``). The CLI
(``labkit.train``) creates the folder, writes its description and status files, and decides
whether an interrupted or failed run's folder stays; the index (``labkit.runs``) reads them back;
the training loops add metrics and checkpoints. Both use the functions here.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from labkit.utils.checkpoint import CheckpointError, open_checkpoint
from labkit.utils.distributed import launched_world_size
from labkit.utils.logging import json_safe

REPO = Path(__file__).resolve().parents[2]  # git questions are about the checkout labkit lives in

RUNS_DIR = Path("runs")
STAMP_FORMAT = "%Y%m%d-%H%M%S"  # run folder names start with it
STATUSES = ("running", "finished", "stopped", "diverged", "failed")


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


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=5
    ).stdout


def git_commit() -> str | None:
    """The repository's current commit (``+dirty`` with uncommitted changes), or None."""
    try:
        dirty = bool(uncommitted_files())
        return _git("rev-parse", "--short", "HEAD").strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def uncommitted_files() -> list[str]:
    """The tracked files that differ from the commit (what ``+dirty`` stands for), repository-
    relative; ``[]`` outside a git checkout."""
    try:
        lines = _git("status", "--porcelain", "--untracked-files=no").splitlines()
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(line[3:] for line in lines if line.strip())


def package_versions() -> dict[str, str]:
    """The installed version of every package labkit depends on (its ``pyproject.toml``
    dependencies, torch and torchvision): what a result came from."""
    import importlib.metadata as metadata

    try:
        required = metadata.requires("labkit") or []
    except metadata.PackageNotFoundError:  # labkit run from a source tree, not installed
        required = []
    names = ["torch", "torchvision"] + [
        re.split(r"[ ;<>=!~\[(]", r)[0] for r in required if "extra ==" not in r
    ]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_info(device: torch.device, seed: int) -> dict[str, Any]:
    """Versions (every package labkit depends on), platform, device, git commit, seed and the
    command line: ``env.json``."""
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "git_commit": git_commit(),
        "uncommitted": uncommitted_files(),  # what "+dirty" changed: the commit alone is not it
        "seed": seed,
        "world_size": launched_world_size(),  # a resume must use as many processes
        "argv": sys.argv,
        "packages": package_versions(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


def make_run_dir(cfg: dict, root: str | Path = RUNS_DIR) -> Path:
    """A fresh ``<root>/<experiment>/<time>_<name>_s<seed>`` folder (never an existing one).

    Created atomically: ``mkdir`` either makes the folder or fails because it exists, so two
    runs started in the same second take ``..._s0`` and ``..._s0-1`` instead of racing.
    """
    stamp = time.strftime(STAMP_FORMAT)
    base = Path(root) / cfg["experiment"] / f"{stamp}_{cfg.get('name', 'run')}_s{cfg['seed']}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        run_dir = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise FileExistsError(f"Could not make a new run folder next to {base}.")


def run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder holding ``checkpoint`` (``<run>/checkpoints/step_N.pt``), or None when the
    file lies elsewhere (a download, a copy): then a resume writes a new run folder."""
    folder = checkpoint.resolve().parent.parent
    if checkpoint.resolve().parent.name == "checkpoints" and (folder / "config.yaml").is_file():
        return folder
    return None


# Keys a resume may change: where and how often things are written, never the math.
RESUME_MAY_CHANGE = (
    "device", "name", "torch_threads", "data.num_workers", "eval.log_images",
    "trainer.log_every", "trainer.eval_every", "trainer.ckpt_every", "trainer.keep_last",
    "trainer.profile_memory",
)  # fmt: skip
BUDGET_KEYS = ("trainer.max_steps", "trainer.max_env_steps", "trainer.max_episodes")


@dataclass
class ResumePoint:
    """Where a run stopped, read without writing anything (a phase's ``resume_point(path)``).

    ``run_dir``: the run folder to continue in place (None: the file lies outside a run folder,
    so the continuation gets a new one); ``config``: the config the run was made with (after a
    resume, its newest); ``step``: how far it got, in the unit of its ``metrics.jsonl`` rows;
    ``resume_from``: what the phase's ``run(..., resume_from=...)`` takes (a checkpoint, or the
    run folder when the phase keeps its own loop state there); ``budget_keys``: the config keys
    a resume may grow (:func:`refused_resume_changes`).
    """

    run_dir: Path | None
    config: dict
    step: int
    resume_from: Any
    # the keys whose growth continues this run (a phase whose budget is not a step count, e.g.
    # P40, where trainer.max_steps is each round's training, lists none)
    budget_keys: tuple[str, ...] = BUDGET_KEYS


def checkpoint_resume_point(path: str | Path) -> ResumePoint:
    """:class:`ResumePoint` of a phase that resumes from its newest ``checkpoints/step_*.pt``
    (``path``: a checkpoint file, a ``checkpoints/`` folder or a run folder)."""
    ckpt = open_checkpoint(path)
    return ResumePoint(run_folder_of(ckpt.path), ckpt.config or {}, ckpt.step, ckpt)


def saved_config(path: str | Path) -> dict:
    """The config a run folder or checkpoint file was made with, read to learn its phase.

    A run folder: its newest ``config*.yaml`` (a resume writes ``config.resume<step>.yaml``);
    a file: the checkpoint's own config. ``CheckpointError`` when neither is there.
    """
    path = Path(path)
    if path.is_dir() and (path / "config.yaml").is_file():
        newest = max(path.glob("config*.yaml"), key=lambda p: p.stat().st_mtime_ns)
        return yaml.safe_load(newest.read_text()) or {}
    config = open_checkpoint(path).config
    if not config:
        raise CheckpointError(
            f"Checkpoint '{path}' holds no config, so it cannot be resumed as a run; start a new "
            f"run from its weights with --init-from instead."
        )
    return config


def saved_world_size(run_dir: Path) -> int:
    """The number of processes the run in ``run_dir`` was last trained with (its newest
    ``env*.json``; 1 when it does not say)."""
    envs = sorted(Path(run_dir).glob("env*.json"), key=lambda p: p.stat().st_mtime_ns)
    try:
        info = json.loads(envs[-1].read_text()) if envs else {}
    except (OSError, ValueError):
        info = {}
    size = info.get("world_size", 1) if isinstance(info, dict) else 1
    return size if isinstance(size, int) and size >= 1 else 1


def write_status(run_dir: Path | None, status: str, **details: Any) -> None:
    """``status.json`` (atomically): one of :data:`STATUSES`, the time, and ``details`` (pid and
    host while running; the summary or the error message at the end)."""
    if run_dir is None:
        return
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **details}
    tmp = Path(run_dir) / ".status.json.tmp"
    tmp.write_text(json.dumps(json_safe(record), indent=2, default=str))
    tmp.replace(Path(run_dir) / "status.json")


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """``status.json`` as a dict (``{}`` when missing or unreadable)."""
    try:
        record = json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except (OSError, OverflowError, TypeError):
        return False
    return True


def live_process(run_dir: str | Path) -> int | None:
    """The pid of the process still running ``run_dir`` on this host, or None."""
    record = read_status(run_dir)
    pid = record.get("pid")
    if record.get("status") != "running" or record.get("host") != socket.gethostname():
        return None
    if not isinstance(pid, int) or pid == os.getpid() or not process_alive(pid):
        return None
    return pid


def unique_suffix(run_dir: Path, step: int) -> str:
    """``.resume<step>``, or ``.resume<step>-2``, ... when an earlier resume from that step left
    its files: each continuation keeps its own record."""
    suffix, n = f".resume{step}", 1
    while (run_dir / f"config{suffix}.yaml").exists():
        n += 1
        suffix = f".resume{step}-{n}"
    return suffix


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop the rows of ``metrics.jsonl`` logged after ``step``; return how many were dropped.

    A run killed after its last checkpoint had logged steps it will now run again: without this
    those steps would appear twice. Written atomically (temporary file, then rename).
    """
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(kept) < len(lines):
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
    return len(lines) - len(kept)


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def refused_resume_changes(
    saved: dict, new: dict, step: int, budget_keys: tuple[str, ...] = BUDGET_KEYS
) -> list[str]:
    """Why ``new`` cannot continue a run made with ``saved`` at ``step`` (empty: it can).

    The rule: keys that don't change the math (:data:`RESUME_MAY_CHANGE`) may change; a budget
    (``trainer.max_steps`` ...) may grow past ``step`` only when no LR schedule was laid out over
    it (``optim.scheduler: none``, or no schedule at all: RL); anything else is refused.
    """
    before, after = flatten(saved), flatten(new)
    reasons = []
    for key in sorted(set(before) | set(after)):
        old, value = before.get(key), after.get(key)
        if old == value or key in RESUME_MAY_CHANGE:
            continue
        if key in budget_keys and isinstance(value, int) and value > step:
            if after.get("optim.scheduler", "none") == "none":
                continue
            reasons.append(
                f"{key} {old} -> {value} (the {after['optim.scheduler']} LR schedule was laid "
                f"out over {old} steps; stretching it would change every later step)"
            )
        elif key in budget_keys:
            reasons.append(f"{key} {old} -> {value} (the run is already at step {step})")
        else:
            reasons.append(f"{key} {old!r} -> {value!r}")
    return reasons


def write_run_files(
    run_dir: Path, cfg: dict, device: torch.device, suffix: str = "", parent: Any = None
) -> None:
    """``config<suffix>.yaml`` and ``env<suffix>.json`` (a resume writes ``.resume<step>`` ones).

    ``parent``: the checkpoint (``labkit.utils.checkpoint.Checkpoint``) a new run starts from
    (``--init-from``, or a resume outside its run folder); its path and step go into env.json.
    """
    (run_dir / f"config{suffix}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    info = environment_info(device, cfg["seed"])
    if parent is not None:
        info["parent"] = {"checkpoint": str(Path(parent.path).resolve()), "step": parent.step}
    (run_dir / f"env{suffix}.json").write_text(json.dumps(info, indent=2))
