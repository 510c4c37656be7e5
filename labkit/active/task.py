"""P40's task: which frames are worth labelling? Selectors × seeds × rounds, compared honestly.

``run(cfg, run_dir, ...)`` builds the pool (``labkit.active.pool``) and the held-out set, then
runs the loop of ``labkit.active.loop`` for every selector of ``active.selectors`` and every seed
of ``active.seeds``, and summarises the label-efficiency curves (``labkit.active.curves``):

    run_dir/
      config.yaml env.json         (written by the CLI)
      loops/<selector>_s<seed>/    state.json (resume), metrics.jsonl + tb/ (x: labelled
                                   frames), rounds.jsonl (chosen ids and their scores)
      checkpoints/step_<N>.pt      a progress marker: the config and N finished rounds (no
                                   weights: every round retrains), so `--resume RUN` finds it
      curves.json curves.png       mean ± std curves, AUCs, labels saved, the gap test
      metrics.jsonl tb/            the mean curves, one scalar series per selector

``python -m labkit.train p40_active`` and ``python -m labkit.done p40`` call the same ``run``;
the notebook (notebooks/40_active_learning_detection.py) too.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from labkit.active.config import Config
from labkit.active.curves import format_table, gap_test, plot_curves, summarise
from labkit.active.loop import LoopInterrupted, LoopState, run_loop
from labkit.active.pool import InMemoryDetectionSet, SkewedShapesPool, materialise
from labkit.active.selectors import (
    RandomSelector,
    UncertaintySelector,
    check_selection,
    make_selector,
)
from labkit.detection.dataset import detection_collate
from labkit.detection.task import build
from labkit.utils.checkpoint import Checkpoint, checkpoint_name, save_checkpoint
from labkit.utils.checks import Check
from labkit.utils.config import ConfigError, apply_overrides, load_config
from labkit.utils.device import get_device
from labkit.utils.logging import MetricsLogger
from labkit.utils.runs import RunResult
from labkit.utils.schema import check_config
from labkit.utils.seed import set_seed

# ---------------------------------------------------------------------------------------------
# Config


def check(cfg: dict) -> dict:
    """``cfg`` checked against P40's schema (``labkit.active.config``); ``ConfigError`` if not.

    Returns the config with types coerced and defaults filled (what ``run`` uses).
    """
    return check_config(cfg, Config)


# ---------------------------------------------------------------------------------------------
# Data


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


def build_val_loader(cfg: dict, device: torch.device) -> DataLoader:
    """The held-out set exactly as P10 builds it (``data.val_*``: balanced shapes), in memory."""
    set_seed(cfg["seed"])
    val_set = materialise(build(cfg, device).eval_set)
    return DataLoader(
        val_set, batch_size=cfg["data"]["eval_batch_size"], collate_fn=detection_collate
    )


# ---------------------------------------------------------------------------------------------
# The comparison


@dataclass
class Comparison:
    """What ``run`` returns in ``details``: every loop's state, the curves and the gap tests."""

    states: dict[tuple[str, int], LoopState]
    summary: dict | None = None
    tests: dict[str, dict] = field(default_factory=dict)
    table: str = ""


def _resume_folder(resume_from: Any) -> Path:
    if isinstance(resume_from, Checkpoint):  # the CLI's --resume: runs/<exp>/<run>/checkpoints/x
        return resume_from.path.parent.parent
    path = Path(resume_from)
    return path.parent.parent if path.is_file() else path


def run(
    cfg: dict,
    run_dir: str | Path | None = None,
    device: torch.device | None = None,
    *,
    resume_from: str | Path | Checkpoint | None = None,
    init_from: str | Path | Checkpoint | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> RunResult:
    """Run the whole comparison (selectors × seeds × rounds) and summarise it.

    Args:
        run_dir: where the loops' states, logs and the curves go (``None``: a temporary folder,
            deleted at the end).
        resume_from: a run folder (or the CLI's checkpoint in it) to continue: finished rounds
            are kept, the rest is run. ``run_dir`` may be omitted (or must be that folder).
        init_from: not supported: every round trains a fresh detector (``ConfigError``).
        stop_after: stop after this many rounds in this call, as if interrupted (tests, notebook).

    Returns:
        ``summary``: ``step`` (rounds finished), ``stopped_by``, ``auc/<selector>``,
        ``final_map50/<selector>``, ``gap/<selector>``; ``details``: :class:`Comparison`;
        ``setup``: ``{"pool": ..., "val_loader": ...}``.
    """
    cfg = check(cfg)
    if init_from is not None:
        raise ConfigError(
            "P40 retrains a fresh detector every round (the honest comparison), so --init-from "
            "has nothing to start from; set active.warm_start=true to carry weights across rounds"
        )
    device = device or get_device(cfg["device"])
    if resume_from is not None:
        folder = _resume_folder(resume_from)
        if run_dir is not None and Path(run_dir).resolve() != folder.resolve():
            raise ConfigError(f"resume_from {folder} is not run_dir {run_dir}: resume in place")
        run_dir = folder
    temporary = tempfile.TemporaryDirectory() if run_dir is None else None
    run_dir = Path(temporary.name if temporary else run_dir)
    try:
        return _run(cfg, run_dir, device, resume_from is not None, progress, stop_after)
    finally:
        if temporary is not None:
            temporary.cleanup()


def _run(cfg, run_dir: Path, device, resume: bool, progress: bool, stop_after) -> RunResult:
    active = cfg["active"]
    pool = build_pool(cfg)
    val_loader = build_val_loader(cfg, device)
    loops = [(name, seed) for seed in active["seeds"] for name in active["selectors"]]
    per_loop = active["rounds"] + 1
    folders = {key: run_dir / "loops" / f"{key[0]}_s{key[1]}" for key in loops}
    existing = {k: f / "state.json" for k, f in folders.items() if (f / "state.json").exists()}
    if existing and not resume:
        raise ConfigError(
            f"{run_dir} already holds loops; pass resume_from={run_dir} to continue them"
        )
    done_before = sum(LoopState.load(p).rounds_done for p in existing.values())
    done = {"rounds": done_before, "this_call": 0}
    bar = tqdm(total=len(loops) * per_loop, initial=done_before, desc="p40", disable=not progress)

    def on_round(state: LoopState) -> None:
        done["rounds"] += 1
        done["this_call"] += 1
        last = state.history[-1]
        bar.update(1)
        bar.set_postfix(
            sel=state.selector, seed=state.seed, n=last["labelled"], map=f"{last['eval/map50']:.3f}"
        )
        # A progress marker for the CLI's --resume (config + rounds finished, no weights).
        save_checkpoint(
            run_dir / "checkpoints" / checkpoint_name(done["rounds"]),
            nn.Module(),
            None,
            step=done["rounds"],
            config=cfg,
            keep_last=1,
        )

    states: dict[tuple[str, int], LoopState] = {}
    stopped_by = "max_steps"
    start = time.perf_counter()
    try:
        for seed in active["seeds"]:
            round_cache: dict = {}  # trainings shared by this seed's selectors
            for name in active["selectors"]:
                states[(name, seed)] = run_loop(
                    cfg,
                    make_selector(name, active),
                    seed,
                    pool,
                    val_loader,
                    device,
                    folder=folders[(name, seed)],
                    resume=resume,
                    round_cache=round_cache,
                    should_stop=lambda: stop_after is not None and done["this_call"] >= stop_after,
                    on_round=on_round,
                )
    except LoopInterrupted as error:
        stopped_by = str(error).split(" ", 1)[0]
    finally:
        bar.close()
    complete = len(states) == len(loops) and all(s.rounds_done == per_loop for s in states.values())
    if stopped_by == "max_steps" and not complete:
        stopped_by = "stop_after"
    comparison = Comparison(states)
    summary_row: dict[str, Any] = {"step": done["rounds"], "stopped_by": stopped_by}
    if complete:
        _summarise(comparison, run_dir)
        for name, entry in comparison.summary["selectors"].items():
            summary_row[f"auc/{name}"] = entry["auc_mean"]
            summary_row[f"final_map50/{name}"] = entry["final_mean"]
        for name, test in comparison.tests.items():
            summary_row[f"gap/{name}"] = test["gap"]
        summary_row["random_auc_std"] = comparison.summary["selectors"]["random"]["auc_std"]
    summary_row["seconds"] = time.perf_counter() - start
    return RunResult(summary_row, comparison, {"pool": pool, "val_loader": val_loader})


def _summarise(comparison: Comparison, run_dir: Path) -> None:
    """Curves, gap tests and the table; ``curves.json``, ``curves.png``, mean-curve scalars."""
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
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # a resumed, finished run: no repeats
    logger = MetricsLogger(run_dir)
    try:
        for name, entry in comparison.summary["selectors"].items():
            for n, mean, std in zip(entry["labelled"], entry["mean"], entry["std"], strict=True):
                logger.log(n, {f"curve/{name}/map50_mean": mean, f"curve/{name}/map50_std": std})
    finally:
        logger.close()


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


# ---------------------------------------------------------------------------------------------
# "Done when" checks for P40 (python -m labkit.done p40)

# The comparison the checks run: p40_active's pool, budget and training, restricted to random
# against entropy (max over detections), 3 seeds, 2 acquisition rounds of 60 frames after 40
# initial ones (40 -> 160 labelled), 300 steps a round: 13 trainings (round 0 is shared);
# measured 5.3 minutes on one CPU thread at load ~1 (315 s of CPU), 30 min on a busy machine.
DONE_OVERRIDES = [
    "device=cpu",
    "active.selectors=[random, entropy]",
    "active.seeds=[0, 1, 2]",
    "active.rounds=2",
]

_done_run: dict = {}


def _p40_cfg(*overrides: str) -> dict:
    return apply_overrides(load_config("p40_active"), [*DONE_OVERRIDES, *overrides])


def _comparison() -> tuple[RunResult, float]:
    if not _done_run:
        start = time.perf_counter()
        result = run(_p40_cfg(), None, torch.device("cpu"), progress=False)
        _done_run.update(result=result, seconds=time.perf_counter() - start)
    return _done_run["result"], _done_run["seconds"]


def check_p40_beats_random() -> Check:
    """(a) An uncertainty selector's mAP@0.5 AUC beats random's by more than 2 std of random's."""
    result, seconds = _comparison()
    comparison = result.details
    print(comparison.table)
    best = max(comparison.tests, key=lambda name: comparison.tests[name]["gap"])
    test = comparison.tests[best]
    entry = comparison.summary["selectors"][best]
    saved = entry.get("labels_saved")
    measured = (
        f"{best}: AUC {entry['auc_mean']:.3f} vs random "
        f"{comparison.summary['selectors']['random']['auc_mean']:.3f}, gap {test['gap']:+.3f} vs "
        f"2σ_random {test['threshold']:.3f}; paired {test['paired_mean']:+.3f} ± "
        f"{test['paired_std']:.3f} ({test['wins']}/{len(test['paired'])} seeds won); labels saved "
        f"to reach random's final mAP: {'none' if saved is None else f'{saved:.0f}'} "
        f"({seconds:.0f} s, {torch.get_num_threads()} CPU threads)"
    )
    return Check(
        "uncertainty beats random",
        "AUC gap > 2 × std(random AUC)",
        measured,
        any(t["passed"] for t in comparison.tests.values()),
        seconds,
    )


def check_p40_selection_invariants() -> Check:
    """(b) Every selection holds K distinct, never-labelled pool ids (the comparison and edge cases)."""
    start = time.perf_counter()
    result, _ = _comparison()
    problems, selections = [], 0
    pool_size = len(result.setup["pool"])
    for (name, seed), state in result.details.states.items():
        labelled = _initial(state)
        for entry in state.history:
            if "chosen" not in entry:
                continue
            pool_ids = [i for i in range(pool_size) if i not in set(labelled)]
            found = check_selection(entry["chosen"], pool_ids, labelled, len(entry["chosen"]))
            if len(entry["chosen"]) != result.details.states[(name, seed)].settings["active"]["k"]:
                found.append("not K ids")
            problems += [f"{name} s{seed} round {entry['round']}: {p}" for p in found]
            labelled += entry["chosen"]
            selections += 1
    # Edge cases on hand-made scores: k > pool, k = 0, ties broken by the smaller id.
    g = torch.Generator().manual_seed(0)
    ids, tied = [7, 3, 9, 1], torch.tensor([0.5, 0.9, 0.5, 0.9])
    cases = {
        "ties": UncertaintySelector().select(tied, ids, 3, g) == [1, 3, 7],
        "k > pool": sorted(RandomSelector().select(None, ids, 10, g)) == [1, 3, 7, 9],
        "k = 0": UncertaintySelector().select(tied, ids, 0, g) == [],
    }
    problems += [f"edge case {name}" for name, ok in cases.items() if not ok]
    measured = (
        f"{selections} selections of the comparison: K distinct unlabelled pool ids each; edge "
        f"cases {', '.join(cases)}: " + ("ok" if not problems else "; ".join(problems[:3]))
    )
    return Check(
        "selection invariants",
        "K distinct, never labelled",
        measured,
        not problems,
        time.perf_counter() - start,
    )


def _initial(state: LoopState) -> list[int]:
    chosen = [i for entry in state.history for i in entry.get("chosen", [])]
    return [i for i in state.labelled if i not in set(chosen)]


DONE_CHECKS = [check_p40_beats_random, check_p40_selection_invariants]
