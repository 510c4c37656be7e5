"""Headless training: ``python -m labkit.train CONFIG [key=value ...] [--device D] [--resume PATH]``.

Loads the config, applies the overrides, makes the run folder
``runs/<experiment>/<YYYYmmdd-HHMMSS>_<name>_s<seed>/`` (resolved ``config.yaml``, ``env.json``,
``metrics.jsonl``, ``tb/``, ``checkpoints/``) and dispatches on the config's ``task``.
``--resume`` continues a run in its own folder, from a checkpoint file or a run folder.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from labkit.data.common import DataError
from labkit.trainers.supervised_trainer import TrainingDiverged
from labkit.utils.checkpoint import CheckpointError, latest_checkpoint, read_checkpoint
from labkit.utils.config import ConfigError, apply_overrides, load_config
from labkit.utils.device import DeviceError, get_device
from labkit.utils.logging import get_logger, json_safe
from labkit.utils.seed import set_seed

log = get_logger(__name__)

# config `task` -> "module:function"; the function is called as
# fn(cfg, run_dir, device, resume_from) and returns a JSON-able summary dict
TASKS = {
    "classification": "labkit.tasks.classification:cli_run",
    "detection": "labkit.tasks.detection:cli_run",
    "rl_dqn": "labkit.tasks.rl:cli_run_dqn",
    "rl_pg": "labkit.tasks.rl:cli_run_pg",
}

RUNS_DIR = Path("runs")


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


def environment_info(device: torch.device, seed: int) -> dict:
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


def make_run_dir(cfg: dict, root: Path = RUNS_DIR) -> Path:
    """A fresh ``runs/<experiment>/<time>_<name>_s<seed>`` folder (never an existing one)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / cfg["experiment"] / f"{stamp}_{cfg.get('name', 'run')}_s{cfg['seed']}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir, n = base.with_name(f"{base.name}-{n}"), n + 1
    run_dir.mkdir(parents=True)
    return run_dir


def task_function(cfg: dict):
    """The function that runs the config's ``task``."""
    task = cfg.get("task")
    if task not in TASKS:
        raise ConfigError(f"Config task '{task}' is not one of: {', '.join(sorted(TASKS))}.")
    module, _, function = TASKS[task].partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "config", help="config name in labkit/configs (e.g. p00_mnist) or a YAML path"
    )
    parser.add_argument(
        "overrides", nargs="*", help="key.sub=value overrides, e.g. trainer.max_steps=200"
    )
    parser.add_argument(
        "--device", help="auto | cpu | cuda | cuda:N (overrides the config's device)"
    )
    parser.add_argument(
        "--resume", help="checkpoint file or run folder to continue (in its own folder)"
    )
    parser.add_argument(
        "--runs-dir", default=str(RUNS_DIR), help="where run folders go (default: runs)"
    )
    args = parser.parse_args(argv)
    try:
        # Everything that can fail on bad input is checked before anything is written.
        resume_path = None
        if args.resume:
            resume_path = latest_checkpoint(args.resume)
            resume_step, saved_cfg = (read_checkpoint(resume_path)[k] for k in ("step", "config"))
            cfg = saved_cfg if saved_cfg else load_config(args.config)
        else:
            cfg = load_config(args.config)
        cfg = apply_overrides(cfg, args.overrides)
        if args.device:
            cfg["device"] = args.device
        run_task = task_function(cfg)
        device = get_device(cfg.get("device", "auto"))
        set_seed(cfg["seed"], deterministic=cfg.get("deterministic", False))
        if resume_path is not None:
            run_dir = resume_path.parent.parent  # runs/<exp>/<run>/checkpoints/step_N.pt
        else:
            run_dir = make_run_dir(cfg, Path(args.runs_dir))
        suffix = "" if resume_path is None else f".resume{resume_step}"
        (run_dir / f"config{suffix}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        (run_dir / f"env{suffix}.json").write_text(
            json.dumps(environment_info(device, cfg["seed"]), indent=2)
        )
        log.info("run folder: %s", run_dir)
        summary = run_task(cfg, run_dir, device, resume_path)
    except (ConfigError, CheckpointError, DeviceError, DataError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(json_safe({"run_dir": str(run_dir), **summary})))
    return 130 if summary.get("stopped_by", "max_steps") != "max_steps" else 0


if __name__ == "__main__":
    sys.exit(main())
