"""P40's task: which frames are worth labelling? Selectors × seeds × rounds, compared honestly.

``build(cfg, device)`` makes what every loop shares (the pool, the held-out set: an
:class:`~labkit.active.loop.ActiveSetup`); ``run(cfg, run_dir, ...)`` runs the loop of
``labkit.active.loop`` for every selector of ``active.selectors`` and every seed of
``active.seeds``, and summarises the label-efficiency curves (``labkit.active.curves``):

    run_dir/
      config.yaml env.json         (written by the CLI; config.resume<N>.yaml on a resume)
      loops/<selector>_s<seed>/    state.json (what a resume continues), metrics.jsonl + events
                                   (x: labelled frames), rounds.jsonl (chosen ids, scores)
      curves.json curves.png       mean ± std curves, AUCs, labels saved, the gap test
      metrics.jsonl events         the mean curves (labkit.active.report)

No checkpoints: every round retrains from scratch, so the loops' ``state.json`` files are the
whole state, and :func:`resume_point` reads them. ``python -m labkit.train p40_active`` (and its
``--resume RUN``) and ``python -m labkit.done p40`` call the same ``run``; the notebook
(notebooks/40_active_learning_detection.py) too.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from labkit.active.config import Config
from labkit.active.loop import (
    ActiveSetup,
    LoopState,
    loop_folder,
    run_loop,
    saved_loops,
)
from labkit.active.pool import InMemoryDetectionSet, SkewedShapesPool, materialise
from labkit.active.report import Comparison, write_report
from labkit.active.selectors import make_selector
from labkit.detection.dataset import build_datasets, detection_collate
from labkit.utils.checkpoint import CheckpointError
from labkit.utils.config import ConfigError
from labkit.utils.device import get_device
from labkit.utils.progress import progress_bar
from labkit.utils.runs import ResumePoint, RunResult, saved_config
from labkit.utils.schema import check_config


def check(cfg: dict) -> dict:
    """``cfg`` checked against P40's schema (``labkit.active.config``); ``ConfigError`` if not.

    Returns the config with types coerced and defaults filled (what ``run`` uses).
    """
    return check_config(cfg, Config)


# ---------------------------------------------------------------------------------------------
# Build


def build_pool(cfg: dict) -> InMemoryDetectionSet:
    """The skewed shapes log of ``active.pool``, drawn into memory once."""
    p = cfg["active"]["pool"]
    return materialise(
        SkewedShapesPool(
            p["num_images"],
            image_size=cfg["data"]["image_size"],
            fractions=tuple(p["fractions"]),
            burst=p["burst"],
            jitter=p["jitter"],
            rare_max_objects=p["rare_max_objects"],
            seed=p["seed"],
        )
    )


def build_heldout(cfg: dict) -> tuple[DataLoader, tuple[str, ...]]:
    """The held-out set exactly as P10 builds it (``data.val_*``: balanced shapes), in memory,
    as a loader, and P10's class names."""
    _, val_set, class_names = build_datasets(cfg, augment=False)
    loader = DataLoader(
        materialise(val_set),
        batch_size=cfg["data"]["eval_batch_size"],
        collate_fn=detection_collate,
        generator=torch.Generator(),  # its own: an iterator's seed is not drawn from the global RNG
    )
    return loader, class_names


def build(cfg: dict, device: torch.device) -> ActiveSetup:
    """The pool and the held-out set every loop of the comparison shares (built once)."""
    heldout, class_names = build_heldout(cfg)
    return ActiveSetup(cfg, build_pool(cfg), heldout, class_names, device)


# ---------------------------------------------------------------------------------------------
# Resume: the run folder's loops are the state


def resume_point(path: str | Path) -> ResumePoint:
    """Where the comparison in run folder ``path`` stopped: rounds finished over all loops.

    Reads only. ``CheckpointError`` when ``path`` is no run folder or holds no finished round
    (nothing to continue); ``ConfigError`` when a loop was made with other settings than the
    folder's newest config.
    """
    run_dir = Path(path)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(
            f"'{path}' is not a P40 run folder (no config.yaml); resume the folder of the run "
            f"(runs/p40_active/<run>), which keeps its loops' state.json files."
        )
    config = saved_config(run_dir)
    states = saved_loops(run_dir, check(config))
    if not states and list(run_dir.glob("loops/*/to_label.json")):  # waiting for a person's labels
        return ResumePoint(run_dir, config, 0, run_dir, budget_keys=())
    if not states:
        raise CheckpointError(
            f"'{run_dir}' holds no finished round (no loops/*/state.json): nothing to resume; "
            f"start a new run with its config."
        )
    rounds = sum(s.rounds_done for s in states.values())
    # every round retrains for trainer.max_steps: no key grows this run, so none may change
    return ResumePoint(run_dir, config, rounds, run_dir, budget_keys=())


# ---------------------------------------------------------------------------------------------
# The comparison


def run(
    cfg: dict,
    run_dir: str | Path | None = None,
    device: torch.device | None = None,
    *,
    resume_from: str | Path | None = None,
    init_from: Any = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> RunResult:
    """Run the whole comparison (selectors × seeds × rounds) and summarise it.

    Args:
        run_dir: where the loops' states, logs and the curves go (``None``: a temporary folder,
            deleted at the end).
        resume_from: a run folder to continue in place (what :func:`resume_point` returns):
            finished rounds are kept, the rest is run. ``run_dir`` may be omitted (or must be
            that folder).
        init_from: not supported: every round trains a fresh detector (``ConfigError``).
        stop_after: stop after this many rounds in this call, as if interrupted (tests, notebook).

    Returns:
        ``summary``: ``step`` (rounds finished), ``stopped_by``, ``auc/<selector>``,
        ``final_map50/<selector>``, ``gap/<selector>``; ``details``: :class:`Comparison`;
        ``setup``: the :class:`~labkit.active.loop.ActiveSetup` (pool, held-out set).
    """
    cfg = check(cfg)
    if init_from is not None:
        raise ConfigError(
            "P40 retrains a fresh detector every round (the honest comparison), so --init-from "
            "has nothing to start from; set active.warm_start=true to carry weights across rounds"
        )
    if resume_from is not None:
        if run_dir is not None and Path(run_dir).resolve() != Path(resume_from).resolve():
            raise ConfigError(
                f"resume_from {resume_from} is not run_dir {run_dir}: resume in place"
            )
        run_dir = resume_from
    device = device or get_device(cfg["device"])
    folder = tempfile.TemporaryDirectory() if run_dir is None else nullcontext(run_dir)
    with folder as where:
        return _compare(cfg, Path(where), device, resume_from is not None, progress, stop_after)


def _compare(cfg, run_dir: Path, device, resume: bool, progress: bool, stop_after) -> RunResult:
    active = cfg["active"]
    saved = saved_loops(run_dir, cfg)  # before anything is written: refused as a whole
    if saved and not resume:
        raise ConfigError(f"{run_dir} already holds loops; pass resume_from={run_dir} to continue")
    setup = build(cfg, device)
    keys = [(name, seed) for seed in active["seeds"] for name in active["selectors"]]
    per_loop = active["rounds"] + 1
    done_before, done_now = sum(s.rounds_done for s in saved.values()), 0  # rounds finished
    states: dict[tuple[str, int], LoopState] = {}
    stopped_by, start = "max_steps", time.perf_counter()
    # PLUMBING: a progress bar over all rounds. No signal handler of its own: a signal during a
    # round's training stops the trainer (the loop returns its name); anywhere else (building,
    # evaluation, selection) the CLI's handler raises KeyboardInterrupt, which propagates and
    # leaves every finished round's state.json as it was (the cut round is redone on resume).
    bar = progress_bar(
        total=len(keys) * per_loop, initial=done_before, desc="p40", disable=not progress
    )

    def should_stop() -> str | None:
        return "stop_after" if stop_after is not None and done_now >= stop_after else None

    def on_round(state: LoopState) -> None:
        nonlocal done_now
        done_now += 1
        last = state.history[-1]
        bar.update(1)
        bar.set_postfix(
            sel=state.selector, seed=state.seed, n=last["labelled"], map=f"{last['eval/map50']:.3f}"
        )

    try:
        for seed in active["seeds"]:
            round_cache: dict = {}  # trainings shared by this seed's selectors
            for name in active["selectors"]:
                if stopped_by != "max_steps":
                    break
                outcome = run_loop(
                    setup,
                    make_selector(name, active),
                    seed,
                    folder=loop_folder(run_dir, name, seed),
                    resume=resume,
                    round_cache=round_cache,
                    should_stop=should_stop,
                    on_round=on_round,
                )
                states[(name, seed)], stopped_by = outcome.state, outcome.stopped_by
    finally:
        bar.close()
    comparison = Comparison(states)
    step = done_before + done_now
    summary_row: dict[str, Any] = {"step": step, "stopped_by": stopped_by}
    if stopped_by == "max_steps":  # every loop ran all its rounds
        write_report(comparison, run_dir, step)
        for name, entry in comparison.summary["selectors"].items():
            summary_row[f"auc/{name}"] = entry["auc_mean"]
            summary_row[f"final_map50/{name}"] = entry["final_mean"]
        for name, test in comparison.tests.items():
            summary_row[f"gap/{name}"] = test["gap"]
        summary_row["random_auc_std"] = comparison.summary["selectors"]["random"]["auc_std"]
    summary_row["seconds"] = time.perf_counter() - start
    return RunResult(summary_row, comparison, setup)
