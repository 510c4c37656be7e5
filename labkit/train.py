"""Headless training: ``python -m labkit.train CONFIG [key=value ...] [--device D] [--resume PATH]``.

Loads the config, applies the overrides, makes the run folder
``runs/<experiment>/<YYYYmmdd-HHMMSS>_<name>_s<seed>/`` (resolved ``config.yaml``, ``env.json``,
``metrics.jsonl``, ``tb/``, ``checkpoints/``) and calls ``run`` of the task module of the config's
phase (``labkit.registry``), which seeds, builds and trains.
``--resume`` continues a run in its own folder, from a checkpoint file or a run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from labkit.data.common import DataError
from labkit.registry import PHASES, task_module
from labkit.trainers.supervised_trainer import TrainingDiverged
from labkit.utils.checkpoint import CheckpointError, open_checkpoint
from labkit.utils.config import ConfigError, apply_overrides, load_config
from labkit.utils.device import DeviceError, get_device
from labkit.utils.logging import get_logger, json_safe
from labkit.utils.runs import RUNS_DIR, make_run_dir, write_run_files

log = get_logger(__name__)


def phase_task(cfg: dict):
    """The task module of the config's ``phase`` (see ``labkit.registry``)."""
    phase = cfg.get("phase")
    if phase not in PHASES:
        raise ConfigError(
            f"Config phase '{phase}' is not one of: {', '.join(PHASES)}. Start from a config in "
            f"labkit/configs/ (its first lines name the phase)."
        )
    return task_module(phase)


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
        resume = open_checkpoint(args.resume) if args.resume else None  # read once
        cfg = resume.config if resume is not None and resume.config else load_config(args.config)
        cfg = apply_overrides(cfg, args.overrides)
        if args.device:
            cfg["device"] = args.device
        task = phase_task(cfg)
        device = get_device(cfg.get("device", "auto"))  # resolved once, passed on
        if resume is not None:
            run_dir = resume.path.parent.parent  # runs/<exp>/<run>/checkpoints/step_N.pt
            write_run_files(run_dir, cfg, device, suffix=f".resume{resume.step}")
        else:
            run_dir = make_run_dir(cfg, Path(args.runs_dir))
            write_run_files(run_dir, cfg, device)
        log.info("run folder: %s", run_dir)
        result = task.run(cfg, run_dir, device, resume_from=resume)  # seeds, builds, trains
    except (ConfigError, CheckpointError, DeviceError, DataError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(json_safe({"run_dir": str(run_dir), **result.summary})))
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
