"""Headless training: ``python -m labkit.train CONFIG [key=value ...] [--device D] [--resume PATH]``.

Loads the config, applies the overrides, checks every value against the phase's schema, makes
the run folder ``runs/<experiment>/<YYYYmmdd-HHMMSS>_<name>_s<seed>/`` (resolved
``config.yaml``, ``env.json``, ``metrics.jsonl``, ``tb/``, ``checkpoints/``) and calls ``run`` of
the task module of the config's phase (``labkit.registry``), which seeds, builds and trains.

``--resume PATH`` continues a run exactly, in its own folder (a checkpoint outside a run folder
continues into a new folder under --runs-dir). Only keys that don't change the math may differ
from the saved config (device, logging and checkpoint cadence); a budget may grow when no LR
schedule spans it. ``--init-from CKPT`` starts a new run from a checkpoint's weights (fine-tuning,
warm starts) and records the parent in env.json. Every failure ends in one paragraph and exit
code 2, with nothing written; Ctrl-C / SIGTERM save and exit 130.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from labkit.data.common import DataError
from labkit.registry import PHASES, task_module
from labkit.trainers.guards import TrainingDiverged
from labkit.utils.checkpoint import (
    Checkpoint,
    CheckpointError,
    list_checkpoints,
    open_checkpoint,
)
from labkit.utils.config import ConfigError, apply_overrides, load_config
from labkit.utils.device import DeviceError, get_device
from labkit.utils.distributed import (
    all_agree,
    init_distributed,
    is_distributed,
    is_main_process,
    launched_by_torchrun,
    shutdown,
)
from labkit.utils.logging import get_logger, json_safe
from labkit.utils.runs import (
    RUNS_DIR,
    make_run_dir,
    refused_resume_changes,
    run_folder_of,
    truncate_metrics,
    unique_suffix,
    write_run_files,
)

log = get_logger(__name__)
LAB_ERRORS = (ConfigError, CheckpointError, DeviceError, DataError, TrainingDiverged)


def phase_task(cfg: dict):
    """The task module of the config's ``phase`` (see ``labkit.registry``)."""
    phase = cfg.get("phase")
    if phase not in PHASES:
        raise ConfigError(
            f"Config phase '{phase}' is not one of: {', '.join(PHASES)}. Start from a config in "
            f"labkit/configs/ (its first lines name the phase)."
        )
    return task_module(phase)


def resume_config(resume: Checkpoint, config_arg: str | None, overrides: list[str]) -> dict:
    """The saved config with the overrides, refused where the continuation would not be exact."""
    saved = resume.config
    if not saved:
        raise CheckpointError(
            f"Checkpoint '{resume.path}' holds no config, so it cannot be resumed as a run; "
            f"start a new run from its weights with --init-from instead."
        )
    if config_arg is not None:
        named = load_config(config_arg)
        if (named.get("phase"), named.get("experiment")) != (
            saved.get("phase"),
            saved.get("experiment"),
        ):
            raise ConfigError(
                f"CONFIG '{config_arg}' is experiment {named.get('experiment')!r} but checkpoint "
                f"'{resume.path}' was written by {saved.get('experiment')!r}; resume it with "
                f"that config (or leave CONFIG out: --resume alone uses the saved one)."
            )
    task = phase_task(saved)
    before = task.check(saved)
    cfg = task.check(apply_overrides(saved, overrides))
    refused = refused_resume_changes(before, cfg, resume.step)
    if refused:
        raise ConfigError(
            f"A resume continues the run exactly, so these overrides are refused: "
            f"{'; '.join(refused)}. Only device, name, torch_threads, data.num_workers, "
            f"eval.log_images and trainer.log_every / eval_every / ckpt_every / keep_last may "
            f"change. To train on with other settings, start a new run from these weights: "
            f"--init-from {resume.path}."
        )
    newer = [p for p in list_checkpoints(resume.path.parent) if p.name > resume.path.name]
    if run_folder_of(resume.path) is not None and newer:
        raise CheckpointError(
            f"'{resume.path}' is older than {newer[-1].name} in the same run; resuming it would "
            f"overwrite the newer steps. Resume the run folder (its newest checkpoint), or "
            f"branch a new run from this one with --init-from {resume.path}."
        )
    return cfg


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "config",
        nargs="?",
        help="config name in labkit/configs (e.g. p00_mnist) or a YAML path; optional with "
        "--resume (the checkpoint's own config is used)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="key.sub=value overrides, e.g. trainer.max_steps=200"
    )
    parser.add_argument(
        "--device", help="auto | cpu | cuda | cuda:N (overrides the config's device)"
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--resume", help="checkpoint file or run folder to continue exactly (in its own folder)"
    )
    start.add_argument(
        "--init-from", help="checkpoint whose weights start a new run (fine-tuning, warm starts)"
    )
    parser.add_argument(
        "--runs-dir", default=str(RUNS_DIR), help="where run folders go (default: runs)"
    )
    args = parser.parse_intermixed_args(argv)  # overrides may come after the options too
    if args.config and "=" in args.config:  # `--resume RUN key=value`: no CONFIG given
        args.overrides.insert(0, args.config)
        args.config = None
    if args.config is None and not args.resume:
        parser.error("CONFIG is required unless --resume is given")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    finally:
        shutdown()  # leave the process group (torchrun), a no-op otherwise


def _main(args: argparse.Namespace) -> int:
    overrides = args.overrides + ([f"device={args.device}"] if args.device else [])
    run_dir, fresh, writer = None, False, True
    try:
        # 1. Everything that can fail on bad input is checked before anything is written.
        resume = open_checkpoint(args.resume) if args.resume else None  # read once
        init = open_checkpoint(args.init_from) if args.init_from else None
        if resume is not None:
            cfg = resume_config(resume, args.config, overrides)
            run_dir = run_folder_of(resume.path)
        else:
            cfg = apply_overrides(load_config(args.config), overrides)
            cfg = phase_task(cfg).check(cfg)
        task = phase_task(cfg)
        device = get_device(cfg["device"])  # resolved once, passed on
        if launched_by_torchrun():
            if not getattr(task, "DISTRIBUTED", False):
                raise ConfigError(
                    f"Phase {cfg['phase']} trains in one process; start it with python -m "
                    f"labkit.train, not torchrun (see ENVIRONMENT.md, cloud escalation)."
                )
            device = init_distributed(device)  # this rank's device; NCCL or gloo
            writer = is_main_process()  # rank 0 alone writes the run folder

        # 2. The run folder: a new one, or the resumed run's own.
        if not writer:
            run_dir = None
        elif run_dir is None:
            run_dir, fresh = make_run_dir(cfg, Path(args.runs_dir)), True
            write_run_files(run_dir, cfg, device, parent=init or resume)
        else:
            dropped = truncate_metrics(run_dir, resume.step)
            if dropped:
                log.info(
                    "metrics.jsonl: dropped %d rows logged after step %d", dropped, resume.step
                )
            write_run_files(run_dir, cfg, device, suffix=unique_suffix(run_dir, resume.step))
        if run_dir is not None:
            log.info("run folder: %s", run_dir)
            write_status(run_dir, "running", pid=os.getpid(), host=socket.gethostname())
    except (*LAB_ERRORS, OSError) as err:
        return _failed(err, run_dir, fresh, agree=True)
    if not all_agree(True):  # under torchrun: every rank is ready, or all stop
        return 2

    # 3. Seed, build, train.
    try:
        result = task.run(cfg, run_dir, device, resume_from=resume, init_from=init)
    except (*LAB_ERRORS, OSError) as err:
        return _failed(err, run_dir, fresh)
    except KeyboardInterrupt:  # before the loop's own handler was installed: nothing to save
        print("error: interrupted before training started; nothing was saved.", file=sys.stderr)
        if fresh and run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        return 130
    if run_dir is not None:
        write_status(
            run_dir, "stopped" if result.interrupted else "finished", summary=result.summary
        )
    if writer:
        print(json.dumps(json_safe({"run_dir": str(run_dir), **result.summary})))
    return 130 if result.interrupted else 0


def _failed(err: BaseException, run_dir: Path | None, fresh: bool, agree: bool = False) -> int:
    """Report ``err`` in one paragraph, leave the run folder truthful, return exit code 2."""
    message = describe(err, run_dir)
    print(f"error: {message}", file=sys.stderr)
    if fresh and run_dir is not None and not list_checkpoints(run_dir / "checkpoints"):
        shutil.rmtree(run_dir, ignore_errors=True)  # a run that never saved leaves nothing
    elif run_dir is not None:
        status = "diverged" if isinstance(err, TrainingDiverged) else "failed"
        write_status(run_dir, status, message=message)
    if agree and is_distributed():
        all_agree(False)  # the other ranks wait in all_agree: tell them to stop too
    return 2


def write_status(run_dir: Path | None, status: str, **details) -> None:
    """``status.json``: running, finished, stopped (a signal), diverged or failed. A run still
    marked running whose process is gone crashed (``python -m labkit.runs`` says so)."""
    if run_dir is None:
        return
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **details}
    tmp = run_dir / ".status.json.tmp"
    tmp.write_text(json.dumps(json_safe(record), indent=2, default=str))
    tmp.replace(run_dir / "status.json")


def describe(err: BaseException, run_dir: Path | None) -> str:
    """One paragraph: what went wrong and what to do (file-system errors get the last good file)."""
    if not isinstance(err, OSError):
        return str(err)
    what = err.strerror or str(err)
    where = f" '{err.filename}'" if err.filename else ""
    saved = list_checkpoints(run_dir / "checkpoints") if run_dir is not None else []
    last = f" The last good checkpoint is {saved[-1]}." if saved else " No checkpoint was written."
    return (
        f"Could not write{where}: {what}. Check that --runs-dir is a writable folder with free "
        f"space (df -h; ls -ld).{last}"
    )


if __name__ == "__main__":
    sys.exit(main())
