"""Headless training: ``python -m labkit.train CONFIG [key=value ...] [--device D] [--resume PATH]``.

Loads the config, applies the overrides, checks every value against the phase's schema, makes
the run folder ``runs/<experiment>/<YYYYmmdd-HHMMSS>_<name>_s<seed>/`` (resolved
``config.yaml``, ``env.json``, ``metrics.jsonl``, TensorBoard events, ``checkpoints/``) and calls ``run`` of
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

import yaml

from labkit.data.common import DataError
from labkit.registry import PHASES, PhaseTask, get_phase, task_module
from labkit.runs import metric_rows
from labkit.trainers.guards import InterruptOnSignal, RunInterrupted, TrainingDiverged
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
    launched_world_size,
    shutdown,
)
from labkit.utils.logging import get_logger, json_safe, write_hparams
from labkit.utils.runs import (
    RUNS_DIR,
    ResumePoint,
    live_process,
    make_run_dir,
    refused_resume_changes,
    saved_config,
    saved_world_size,
    truncate_metrics,
    unique_suffix,
    write_run_files,
    write_status,
)

log = get_logger(__name__)
LAB_ERRORS = (ConfigError, CheckpointError, DeviceError, DataError, TrainingDiverged)


def phase_task(cfg: dict) -> PhaseTask:
    """The task module of the config's ``phase`` (see ``labkit.registry``)."""
    phase = cfg.get("phase")
    if not isinstance(phase, str) or phase not in PHASES:
        raise ConfigError(
            f"Config phase '{phase}' is not one of: {', '.join(PHASES)}. Start from a config in "
            f"labkit/configs/ (its first lines name the phase)."
        )
    return task_module(phase)


def open_resume(path: str) -> tuple[PhaseTask, ResumePoint]:
    """The phase and the point where the run at ``path`` (a run folder or checkpoint) stopped.

    Reads only. Refused when another process is still running that folder: two processes in one
    folder would interleave their checkpoints and metrics.
    """
    task = phase_task(saved_config(path))
    point = task.resume_point(path)
    pid = live_process(point.run_dir) if point.run_dir is not None else None
    if pid is not None:
        raise CheckpointError(
            f"Run '{point.run_dir}' is still running (process {pid} on this host); resuming it "
            f"now would put two processes into one folder. Stop that run first (Ctrl-C in its "
            f"terminal, or kill -INT {pid}: it saves and exits), then resume."
        )
    if point.run_dir is not None and saved_world_size(point.run_dir) != launched_world_size():
        before, now = saved_world_size(point.run_dir), launched_world_size()
        raise CheckpointError(
            f"Run '{point.run_dir}' was trained by {before} process(es) and this resume would use "
            f"{now}: each process reads its own shard of every batch, so the data order would "
            f"change and the continuation would not be exact. Resume with the same number "
            f"({'torchrun --nproc_per_node=' + str(before) if before > 1 else 'python -m'} "
            f"labkit.train --resume ...), or start a new run from its weights with --init-from."
        )
    return task, point


def resume_config(
    task: PhaseTask, point: ResumePoint, config_arg: str | None, overrides: list[str]
) -> dict:
    """The saved config with the overrides, refused where the continuation would not be exact."""
    saved, where = point.config, point.run_dir or getattr(point.resume_from, "path", "")
    if config_arg is not None:
        named = load_config(config_arg)
        if (named.get("phase"), named.get("experiment")) != (
            saved.get("phase"),
            saved.get("experiment"),
        ):
            raise ConfigError(
                f"CONFIG '{config_arg}' is experiment {named.get('experiment')!r} but "
                f"'{where}' was written by {saved.get('experiment')!r}; resume it with "
                f"that config (or leave CONFIG out: --resume alone uses the saved one)."
            )
    before = task.check(saved)
    cfg = task.check(apply_overrides(saved, overrides))
    refused = refused_resume_changes(before, cfg, point.step, point.budget_keys)
    if refused:
        raise ConfigError(
            f"A resume continues the run exactly, so these overrides are refused: "
            f"{'; '.join(refused)}. Only device, name, torch_threads, data.num_workers, "
            f"eval.log_images and trainer.log_every / eval_every / ckpt_every / keep_last may "
            f"change. To train on with other settings, start a new run from these weights: "
            f"--init-from {where}."
        )
    if isinstance(point.resume_from, Checkpoint) and point.run_dir is not None:
        ckpt = point.resume_from.path
        newer = [p for p in list_checkpoints(ckpt.parent) if p.name > ckpt.name]
        if newer:
            raise CheckpointError(
                f"'{ckpt}' is older than {newer[-1].name} in the same run; resuming it would "
                f"overwrite the newer steps. Resume the run folder (its newest checkpoint), or "
                f"branch a new run from this one with --init-from {ckpt}."
            )
    return cfg


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.train",
        description=__doc__.replace("``", "'"),
        epilog=configs_help(),
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
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved, checked config as YAML and stop (nothing is written)",
    )
    args = parser.parse_intermixed_args(argv)  # overrides may come after the options too
    if args.config and "=" in args.config:  # `--resume RUN key=value`: no CONFIG given
        args.overrides.insert(0, args.config)
        args.config = None
    if args.config is None and not args.resume:
        parser.error("CONFIG is required unless --resume is given")
    return args


def configs_help() -> str:
    """The shipped configs, one line per phase (the epilog of --help)."""
    lines = ["configs (labkit/configs/):"]
    for phase in PHASES.values():
        lines.append(f"  {phase.name}  {', '.join(phase.configs):38s} {phase.title}")
    lines.append("examples:\n  python -m labkit.train p00_mnist trainer.max_steps=200 --device cpu")
    lines.append("  python -m labkit.train p10_detection --print-config")
    lines.append("  python -m labkit.train --resume runs/p00_mnist/<run>")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    finally:
        shutdown()  # leave the process group (torchrun), a no-op otherwise


def _main(args: argparse.Namespace) -> int:
    overrides = args.overrides + ([f"device={args.device}"] if args.device else [])
    # From here on Ctrl-C and SIGTERM raise RunInterrupted wherever the run is (setup, the
    # judge, evaluation, selection); inside a training loop the loop's own handler saves first.
    with InterruptOnSignal():
        run = LiveRun()
        try:
            return run.start(args, overrides)
        except RunInterrupted as stop:
            return run.interrupted(stop.signal)
        except KeyboardInterrupt:
            return run.interrupted("SIGINT")


class LiveRun:
    """One CLI run's folder, from creation to its last status: the only writer of its life."""

    def __init__(self) -> None:
        self.task: PhaseTask | None = None
        self.run_dir: Path | None = None
        self.fresh = False  # this call made the folder (so it may remove it if nothing is in it)
        self.writer = True  # under torchrun only rank 0 writes the run folder
        self.runs_dir: str | None = None
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()

    def start(self, args: argparse.Namespace, overrides: list[str]) -> int:
        self.runs_dir = args.runs_dir
        try:
            # 1. Everything that can fail on bad input is checked before anything is written.
            point = None
            if args.resume:
                self.task, point = open_resume(args.resume)
                cfg = resume_config(self.task, point, args.config, overrides)
            else:
                cfg = apply_overrides(load_config(args.config), overrides)
                self.task = phase_task(cfg)
                cfg = self.task.check(cfg)
            if args.print_config:  # inspection only: nothing below runs, nothing is written
                print(yaml.safe_dump(cfg, sort_keys=False), end="")
                return 0
            init = open_checkpoint(args.init_from) if args.init_from else None
            device = get_device(cfg["device"])  # resolved once, passed on
            if launched_by_torchrun():
                if not get_phase(cfg["phase"]).distributed:
                    raise ConfigError(
                        f"Phase {cfg['phase']} trains in one process; start it with python -m "
                        f"labkit.train, not torchrun (see ENVIRONMENT.md, cloud escalation)."
                    )
                device = init_distributed(device)  # this rank's device; NCCL or gloo
                self.writer = is_main_process()  # rank 0 alone writes the run folder
            # 2. The run folder: a new one, or the resumed run's own.
            self.prepare_folder(cfg, device, args.runs_dir, point, init)
        except (*LAB_ERRORS, OSError) as err:
            return self.failed(err, agree=True)
        if not all_agree(True):  # under torchrun: every rank is ready, or all stop
            return 2
        # 3. Seed, build, train.
        try:
            result = self.task.run(
                cfg,
                self.run_dir,
                device,
                resume_from=point.resume_from if point is not None else None,
                init_from=init,
            )
        except (*LAB_ERRORS, OSError) as err:
            return self.failed(err)
        stopped = result.interrupted
        write_status(self.run_dir, "stopped" if stopped else "finished", summary=result.summary)
        if self.run_dir is not None:  # TensorBoard's HParams tab: this run's config and results
            write_hparams(self.run_dir, cfg, result.summary)
        if self.writer:
            wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.cpu0
            print(end_of_run(self.run_dir, result.summary, stopped, wall, cpu), file=sys.stderr)
            # the last line, for scripts: the summary as JSON
            print(json.dumps(json_safe({"run_dir": str(self.run_dir), **result.summary})))
        return 130 if stopped else 0

    def prepare_folder(self, cfg, device, runs_dir, point: ResumePoint | None, init) -> None:
        if not self.writer:
            return
        if point is None or point.run_dir is None:  # a new run, or a checkpoint from elsewhere
            self.run_dir, self.fresh = make_run_dir(cfg, Path(runs_dir)), True
            parent = init or (point.resume_from if point is not None else None)
            write_run_files(self.run_dir, cfg, device, parent=parent)
        else:
            self.run_dir = point.run_dir
            dropped = truncate_metrics(self.run_dir, point.step)
            if dropped:
                log.info("metrics.jsonl: dropped %d rows logged after step %d", dropped, point.step)
            suffix = unique_suffix(self.run_dir, point.step)
            write_run_files(self.run_dir, cfg, device, suffix=suffix)
        log.info("run folder: %s", self.run_dir)
        write_status(self.run_dir, "running", pid=os.getpid(), host=socket.gethostname())

    def resumable(self) -> bool:
        """Whether the folder holds anything a resume could continue (the phase decides)."""
        if self.run_dir is None or self.task is None:
            return False
        try:
            self.task.resume_point(self.run_dir)
        except (*LAB_ERRORS, OSError):
            return False
        return True

    def interrupted(self, signal_name: str) -> int:
        """Ctrl-C / SIGTERM outside a training loop: keep what was saved, exit 130."""
        if self.fresh and self.run_dir is not None and not self.resumable():
            shutil.rmtree(self.run_dir, ignore_errors=True)
            print(f"error: {signal_name} before anything was saved; no run folder is kept.",
                  file=sys.stderr)  # fmt: skip
        elif self.run_dir is not None:
            message = (
                f"{signal_name} received; what was saved is kept. Continue with: python -m "
                f"labkit.train --resume {self.run_dir}"
            )
            write_status(self.run_dir, "stopped", message=message)
            print(f"error: {message}", file=sys.stderr)
        return 130

    def failed(self, err: BaseException, agree: bool = False) -> int:
        """Report ``err`` in one paragraph, leave the run folder truthful, return exit code 2."""
        message = describe(err, self.run_dir, self.runs_dir)
        print(f"error: {message}", file=sys.stderr)
        if self.fresh and self.run_dir is not None and not self.resumable():
            shutil.rmtree(self.run_dir, ignore_errors=True)  # a run that never saved leaves nothing
        elif self.run_dir is not None:
            status = "diverged" if isinstance(err, TrainingDiverged) else "failed"
            write_status(self.run_dir, status, message=message)
        if agree and is_distributed():
            all_agree(False)  # the other ranks wait in all_agree: tell them to stop too
        return 2


def end_of_run(run_dir: Path | None, summary: dict, stopped: bool, wall: float, cpu: float) -> str:
    """A few lines for the person at the terminal: the headline numbers, the time it took and
    the next commands (TensorBoard, the index and compare, resume)."""
    numbers = [
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in summary.items()
        if key not in ("stopped_by",) and isinstance(value, int | float | str)
    ]
    rate = None
    rows = metric_rows(run_dir) if run_dir is not None else []  # a cut-short line is skipped
    for row in reversed(rows):
        if "perf/samples_per_s" in row:
            rate = row["perf/samples_per_s"]
            break
    how = f"stopped by {summary.get('stopped_by')}" if stopped else "finished"
    timing = f"{wall:.0f} s wall, {cpu:.0f} s CPU" + (f", {rate:.0f} samples/s" if rate else "")
    lines = [f"run {how} ({timing}): " + ", ".join(numbers)]
    if run_dir is not None:
        root = run_dir.parent.parent
        board = "make tb" if root == RUNS_DIR else f".venv/bin/tensorboard --logdir {root}"
        lines.append(f"  folder    {run_dir}")
        lines.append(f"  curves    {board}")
        lines.append(f"  compare   python -m labkit.runs compare {run_dir.name} <other run>")
        if stopped:
            lines.append(f"  continue  python -m labkit.train --resume {run_dir}")
        else:
            lines.append(f"  branch    python -m labkit.train CONFIG --init-from {run_dir} ...")
    return "\n".join(lines)


def describe(err: BaseException, run_dir: Path | None, runs_dir: str | None = None) -> str:
    """One paragraph: what went wrong and what to do (file-system errors get the last good file
    and the folder to check: --runs-dir only when the failing path lies inside it)."""
    if not isinstance(err, OSError):
        return str(err)
    what = err.strerror or str(err)
    where = f" '{err.filename}'" if err.filename else ""
    saved = list_checkpoints(run_dir / "checkpoints") if run_dir is not None else []
    last = f" The last good checkpoint is {saved[-1]}." if saved else " No checkpoint was written."
    inside = [Path(p).resolve() for p in (run_dir, runs_dir) if p is not None]
    target = Path(err.filename).resolve() if err.filename else None
    if target is None or any(target.is_relative_to(p) for p in inside):
        advice = "Check that --runs-dir is a writable folder with free space (df -h; ls -ld)."
    else:  # a path from a config value (a data root, a cache folder), not the run folder
        advice = (
            f"That path is outside --runs-dir, so it comes from a config value (a data root or "
            f"a cache folder such as eval.judge_dir): point that key at a writable folder "
            f"(ls -ld {target.parent})."
        )
    return f"Could not write{where}: {what}. {advice}{last}"


if __name__ == "__main__":
    sys.exit(main())
