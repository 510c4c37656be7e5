"""The pool-based active-learning loop, one (selector, seed) at a time.

    labelled L_0 (``initial_labelled`` frames drawn by the seed)
    for round r = 0 .. R:
      1. train    a fresh detector on L_r           (P10's build_model, build_optimization, loss)
      2. evaluate it on the held-out set: mAP@0.5, precision and recall at IoU 0.5
      3. infer    on the unlabelled pool U_r = pool - L_r     (labkit.detection.evaluate.predict)
      4. select   K frames of U_r                             (labkit.active.selectors)
      5. label    them: L_{r+1} = L_r + chosen                (ground truth revealed, or a person)
    (no selection after the last round: R selections, R + 1 trained models)

**From scratch, every round** (``active.warm_start: false``, the default). A model warm-started
from the previous round has seen the early frames for more steps than the late ones, and its
score then depends on the path of selections, not only on the labelled set; retraining from the
same initialisation with the same number of steps makes round r's mAP a function of L_r alone,
so two selectors are compared at equal labels *and* equal training. It costs R + 1 full
trainings; ``warm_start: true`` (continue from the previous round's weights, fresh optimizer and
schedule) is there to show the difference.

**Same conditions for every selector** of a seed: the same pool, the same L_0, the same training
seed in round r (``round_seed``), the same steps; only the frames chosen differ. Round 0 is
therefore identical across selectors, and is trained once per seed (``round_cache``): more
generally, a round whose (seed, round, labelled set) another selector already trained is reused
(two selectors that choose alike, like entropy and margin under ``max``, cost one).

**Resumable between rounds**: after each round the loop writes ``state.json`` (labelled ids,
the history of every round) atomically into its folder; a loop started on a folder holding one
continues after the last finished round. A round interrupted mid-training is redone: training
is a function of (seed, round, L_r), so the result is the same as a run that never stopped.
A signal during training stops the trainer, and the loop returns with the signal's name in
``LoopResult.stopped_by``; a ``KeyboardInterrupt`` anywhere else propagates, leaving every
finished round's ``state.json`` as it was.

**Labelling** (``labkit.active.labelling``): the pool's ground truth by default; with
``active.labelling: manual`` the loop writes the ids it needs into ``to_label.json`` and stops
(``LabelsPending``) until ``labels.json`` holds their boxes; rerun with resume to go on.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from labkit.active.labelling import ManualLabeller, SimulatedLabeller, TargetsOf
from labkit.active.mc_dropout import MCDropoutDetector
from labkit.active.pool import LabelledSet
from labkit.active.selectors import ScoringContext, Selector, check_selection
from labkit.data.common import make_loader
from labkit.detection.dataset import RandomHorizontalFlip, detection_collate
from labkit.detection.evaluate import evaluate_detector
from labkit.detection.task import BackboneStage, DetectionLoss, build_model, build_optimization
from labkit.trainers.supervised_trainer import TrainResult, train, trainer_options
from labkit.utils.checkpoint import CheckpointError
from labkit.utils.config import ConfigError
from labkit.utils.logging import MetricsLogger
from labkit.utils.runs import flatten
from labkit.utils.seed import set_seed

__all__ = [
    "ActiveSetup",
    "LoopState",
    "LoopResult",
    "initial_ids",
    "round_seed",
    "loop_folder",
    "saved_loops",
    "train_round",
    "evaluate_round",
    "run_loop",
]


@dataclass
class ActiveSetup:
    """What every loop of one comparison shares, built once (``labkit.active.task.build``).

    ``pool``: the unlabelled frames (in memory); ``heldout``: P10's validation set (in memory),
    the loader every round is evaluated on; ``class_names``: P10's classes.
    """

    cfg: dict  # the P40 config (``run`` checks it first)
    pool: Dataset
    heldout: DataLoader
    class_names: tuple[str, ...]
    device: torch.device

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def initial_ids(pool_size: int, n: int, seed: int) -> list[int]:
    """The seed's initial labelled set: ``n`` frames drawn uniformly (sorted), for every selector."""
    if not 0 < n <= pool_size:
        raise ValueError(f"initial_labelled must be in 1..{pool_size} (the pool size), got {n}")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(pool_size, generator=g)[:n].tolist())


def round_seed(seed: int, round_index: int) -> int:
    """The training seed of round r: the same for every selector, different per seed and round."""
    return seed * 1_000 + round_index


# ---------------------------------------------------------------------------------------------
# State


@dataclass
class LoopState:
    """Everything a (selector, seed) loop needs to continue: written after every round."""

    selector: str
    seed: int
    settings: dict[str, Any]  # what must match to resume (pool, budget, training)
    labelled: list[int]
    rounds_done: int = 0  # trained-and-evaluated rounds
    history: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        """Write ``path`` atomically (a kill leaves the old file or the new one, never half)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> LoopState:
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class LoopResult:
    """What :func:`run_loop` returns: the loop's state and why it returned.

    ``stopped_by``: ``"max_steps"`` (every round done), a signal's name (``"SIGINT"``,
    ``"SIGTERM"``: the trainer stopped mid-round, which is redone on resume) or the reason
    ``should_stop`` gave (e.g. ``"stop_after"``).
    """

    state: LoopState
    stopped_by: str = "max_steps"


def loop_settings(cfg: dict) -> dict[str, Any]:
    """The config values a loop's result depends on (a resumed loop must have the same)."""
    active = {k: v for k, v in cfg["active"].items() if k not in ("selectors", "seeds")}
    return json.loads(json.dumps({
        "active": active, "data": cfg["data"], "model": cfg["model"], "loss": cfg["loss"],
        "optim": cfg["optim"], "max_steps": cfg["trainer"]["max_steps"], "eval": cfg["eval"],
    }))  # fmt: skip


def loop_folder(run_dir: str | Path, selector: str, seed: int) -> Path:
    """``run_dir/loops/<selector>_s<seed>``: where one loop keeps its state and logs."""
    return Path(run_dir) / "loops" / f"{selector}_s{seed}"


def _check_state(state: LoopState, path: Path, selector: str, seed: int, settings: dict) -> None:
    if (state.selector, state.seed, state.settings) != (selector, seed, settings):
        saved, now = flatten(state.settings), flatten(settings)
        keys = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        differ = "; ".join(f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in keys[:6])
        more = f" (and {len(keys) - 6} more)" if len(keys) > 6 else ""
        if (state.selector, state.seed) != (selector, seed):
            differ = f"it is loop {state.selector} seed {state.seed}, not {selector} seed {seed}"
        raise ConfigError(
            f"{path} was made with other settings: {differ}{more}. Resume with the config "
            f"that made it (--resume RUN alone uses it)."
        )


def saved_loops(run_dir: str | Path, cfg: dict) -> dict[tuple[str, int], LoopState]:
    """The loops a run folder holds (``loops/*/state.json``), each checked against ``cfg``.

    Reads only. ``ConfigError`` when a loop was made with other settings or is not one of the
    config's selectors × seeds; ``CheckpointError`` when a state file cannot be read.
    """
    active = cfg["active"]
    expected = {
        loop_folder(run_dir, name, seed).name: (name, seed)
        for seed in active["seeds"]
        for name in active["selectors"]
    }
    settings, states = loop_settings(cfg), {}
    for path in sorted((Path(run_dir) / "loops").glob("*/state.json")):
        try:
            state = LoopState.load(path)
        except (OSError, ValueError, TypeError) as error:
            raise CheckpointError(f"{path} cannot be read as a loop state ({error}).") from error
        key = expected.get(path.parent.name)
        if key is None:
            raise ConfigError(
                f"{path} is a loop ({state.selector}, seed {state.seed}) that the config does not "
                f"run (active.selectors {active['selectors']}, active.seeds {active['seeds']}); "
                f"resume with the config that made it."
            )
        _check_state(state, path, *key, settings)
        states[key] = state
    return states


# ---------------------------------------------------------------------------------------------
# One round


def train_round(
    setup: ActiveSetup,
    ids: list[int],
    targets: dict[int, dict[str, Tensor]],
    seed: int,
    init_state: dict | None = None,
) -> tuple[MCDropoutDetector, TrainResult]:
    """Train a fresh detector (``init_state``: start from these weights) on frames ``ids``.

    P10's pieces make the model, optimizer, schedule and loss from the config's P10 sections
    (``labkit.detection.task``); the loader runs over the labelled frames with P10's random
    flip; the lab's trainer runs ``trainer.max_steps`` steps. Returns the model (wrapped for MC
    dropout) and the trainer's result (``stopped_by``: ``"max_steps"`` or a signal's name).
    """
    cfg, device = setup.cfg, setup.device
    set_seed(seed, deterministic=cfg["deterministic"])
    detector = build_model(cfg, setup.num_classes, device)  # the seed's initial weights
    optimizer, scheduler = build_optimization(cfg, detector)
    if init_state is not None:
        detector.load_state_dict(init_state)
    model = MCDropoutDetector(detector, p=cfg["active"]["dropout"])
    data = cfg["data"]
    flip = RandomHorizontalFlip(data["flip"]) if data["flip"] > 0 else None
    labelled = LabelledSet(TargetsOf(setup.pool, targets), ids, transform=flip)
    loader = make_loader(
        labelled,
        min(data["batch_size"], len(ids)),
        seed=seed,
        num_workers=0,
        collate_fn=detection_collate,
    )
    trainer_cfg = {**cfg["trainer"], "eval_every": 0, "ckpt_every": 0}
    result = train(
        model,
        optimizer,
        loader,
        DetectionLoss(cfg["loss"]),
        device=device,
        scheduler=scheduler,
        run_dir=None,  # the loop logs per round; a checkpoint per round would be 30 MB each
        config=cfg,
        progress=False,
        before_step=BackboneStage(detector, cfg["model"]["unfreeze_at"]),
        **trainer_options(trainer_cfg, device),
    )
    return model, result


def evaluate_round(setup: ActiveSetup, model: torch.nn.Module) -> dict[str, float]:
    """The round's held-out scores: ``eval/map50``, ``eval/ap50/<class>``, ``eval/precision``,
    ``eval/recall`` (precision and recall at score ``eval.report_score``, IoU 0.5)."""
    scores = evaluate_detector(
        model, setup.heldout, setup.device, setup.num_classes, setup.class_names, setup.cfg["eval"]
    )
    return {f"eval/{k}": float(v) for k, v in scores.items()}


def _train_and_evaluate(setup: ActiveSetup, state: LoopState, labeller, init, round_cache):
    """Round r's model, its held-out metrics and the trainer's ``stopped_by`` (``"max_steps"``,
    or a signal's name: then the model is half-trained and the metrics are None).

    A round that another selector of the seed already trained (same round, same labelled set,
    in ``round_cache``) is not trained again: its weights go into a fresh detector (they replace
    the initial weights, so no seeding is needed) and its metrics are reused.
    """
    cfg, r, seed = setup.cfg, state.rounds_done, state.seed
    key = (seed, r, tuple(state.labelled))  # in order: the order sets the data order
    shared = round_cache is not None and (r == 0 or not cfg["active"]["warm_start"])
    if shared and key in round_cache:
        detector = build_model(cfg, setup.num_classes, setup.device)
        detector.load_state_dict(round_cache[key]["weights"])
        model = MCDropoutDetector(detector, p=cfg["active"]["dropout"])
        return model, dict(round_cache[key]["metrics"]), "max_steps"
    targets = labeller.targets(state.labelled)
    model, result = train_round(setup, state.labelled, targets, round_seed(seed, r), init)
    if result.stopped_by != "max_steps":
        return model, None, result.stopped_by
    metrics = evaluate_round(setup, model)
    if shared:
        round_cache[key] = {
            "weights": _clone(model.detector.state_dict()),
            "metrics": dict(metrics),
        }
    return model, metrics, "max_steps"


def _clone(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in state_dict.items()}


# ---------------------------------------------------------------------------------------------
# The loop


def run_loop(
    setup: ActiveSetup,
    selector: Selector,
    seed: int,
    *,
    folder: str | Path | None = None,
    labeller: SimulatedLabeller | ManualLabeller | None = None,
    resume: bool = False,
    round_cache: dict | None = None,
    should_stop: Callable[[], str | None] | None = None,
    on_round: Callable[[LoopState], None] | None = None,
) -> LoopResult:
    """Run (or continue) the loop of ``selector`` with ``seed`` for ``active.rounds`` rounds.

    Args:
        setup: the comparison's config, pool, held-out set and device (:class:`ActiveSetup`).
        folder: where ``state.json``, ``metrics.jsonl``, ``rounds.jsonl`` and the TensorBoard events go
            (``None``: nothing written).
        resume: continue the ``state.json`` in ``folder`` (without: a state there is an error).
        labeller: default :class:`SimulatedLabeller` (or per ``active.labelling``).
        round_cache: a dict shared by the loops of one seed: a (round, labelled set) already
            trained by another selector is reused (round 0 always is); not with warm starts.
        should_stop: asked before each round; a reason it returns (e.g. ``"stop_after"``)
            stops the loop there (the state stays resumable) and becomes ``stopped_by``.
        on_round: called with the state after each finished round (progress bars).

    Returns:
        A :class:`LoopResult`; ``state.history[r]`` holds round r's labelled count, ``eval/*``
        metrics, and (but for the last round) the chosen ids and their scores.
    """
    cfg, pool, active = setup.cfg, setup.pool, setup.cfg["active"]
    rounds = active["rounds"]
    settings = loop_settings(cfg)
    folder = Path(folder) if folder is not None else None
    state_path = folder / "state.json" if folder is not None else None
    if state_path is not None and state_path.exists():
        if not resume:
            raise ConfigError(f"{state_path} exists: pass resume=True to continue that loop")
        state = LoopState.load(state_path)
        _check_state(state, state_path, selector.name, seed, settings)
    else:
        state = LoopState(
            selector.name, seed, settings, initial_ids(len(pool), active["initial_labelled"], seed)
        )
    if active["labelling"] == "manual" and folder is None and labeller is None:
        raise ConfigError("manual labelling needs a folder (to_label.json / labels.json go there)")
    if labeller is None:
        labeller = (
            ManualLabeller(folder) if active["labelling"] == "manual" else SimulatedLabeller(pool)
        )
    logger = MetricsLogger(folder) if folder is not None and state.rounds_done <= rounds else None
    weights = None  # the last round's weights, for warm starts (one file per round: a kill
    # between writing the weights and the state cannot pair round r's state with r+1's weights)
    last = folder / f"model_round{state.rounds_done - 1}.pt" if folder is not None else None
    if active["warm_start"] and last is not None and last.exists():
        weights = torch.load(last, map_location="cpu", weights_only=True)
    try:
        while state.rounds_done <= rounds:
            reason = should_stop() if should_stop is not None else None
            if reason is not None:
                return LoopResult(state, reason)
            r, start = state.rounds_done, time.perf_counter()
            init = weights if active["warm_start"] and r > 0 else None
            # ALGO 1-2: train on L_r, evaluate on the held-out set (or reuse another selector's)
            model, metrics, stopped_by = _train_and_evaluate(
                setup, state, labeller, init, round_cache
            )
            if stopped_by != "max_steps":  # a signal during training: round r is redone on resume
                return LoopResult(state, stopped_by)
            trained = time.perf_counter()
            entry = {"round": r, "labelled": len(state.labelled), **metrics}
            # ALGO 3-4: infer on the unlabelled pool and choose K (not after the last round)
            if r < rounds:
                chosen, chosen_scores = _select(setup, selector, model, state)
                entry.update(chosen=chosen, scores=chosen_scores)
            entry["seconds"] = {"train": trained - start, "select": time.perf_counter() - trained}
            if hasattr(getattr(pool, "source", None), "composition"):
                entry["composition"] = pool.source.composition(state.labelled)
            weights = _clone(model.detector.state_dict())
            if active["warm_start"] and folder is not None:
                torch.save(weights, folder / f"model_round{r}.pt")
            # ALGO 5: label the chosen frames; PLUMBING: the state first (atomic), then the logs
            state.history.append(entry)
            state.labelled = state.labelled + entry.get("chosen", [])
            state.rounds_done = r + 1
            if state_path is not None:
                state.save(state_path)  # the truth; the logs below follow it
                _log_round(logger, folder, entry)
            if on_round is not None:
                on_round(state)
    finally:
        if logger is not None:
            logger.close()
    return LoopResult(state)


def _select(setup: ActiveSetup, selector: Selector, model, state: LoopState):
    """Score the unlabelled frames and choose K; the invariants are checked, loudly."""
    cfg, pool = setup.cfg, setup.pool
    labelled = set(state.labelled)
    pool_ids = [i for i in range(len(pool)) if i not in labelled]
    active, eval_cfg, k = cfg["active"], cfg["eval"], cfg["active"]["k"]
    context = ScoringContext(
        model,
        pool,
        setup.device,
        dict(
            score_thresh=active["score_thresh"],
            nms_iou=eval_cfg["nms_iou"],
            max_dets=eval_cfg["max_dets"],
            batch_size=cfg["data"]["eval_batch_size"],
        ),
        seed=round_seed(state.seed, state.rounds_done),
    )
    rng = torch.Generator().manual_seed(round_seed(state.seed, state.rounds_done) + 7_919)
    chosen = selector.select(context, pool_ids, k, rng)
    problems = check_selection(chosen, pool_ids, state.labelled, k)
    if problems:
        raise AssertionError(f"{selector.name} broke the selection invariants: {problems}")
    scores = selector.scores(context, pool_ids)
    if scores is None:
        return chosen, None
    by_id = dict(zip(pool_ids, scores.tolist(), strict=True))
    return chosen, [by_id[i] for i in chosen]


def _log_round(logger: MetricsLogger | None, folder: Path, entry: dict) -> None:
    """Scalars to metrics.jsonl and TensorBoard (x axis: labelled frames); ids to rounds.jsonl."""
    with open(folder / "rounds.jsonl", "a") as handle:
        handle.write(json.dumps(entry) + "\n")
    if logger is None:
        return
    n = entry["labelled"]
    row = {k: v for k, v in entry.items() if k.startswith("eval/")}
    row.update(
        round=entry["round"], labelled=n, **{f"time/{k}_s": v for k, v in entry["seconds"].items()}
    )
    if entry.get("scores"):
        row["select/mean_score"] = sum(entry["scores"]) / len(entry["scores"])
    logger.log(n, row)
    if logger.writer is not None and "chosen" in entry:
        logger.writer.add_text("select/chosen", json.dumps(entry["chosen"]), n)
        if entry.get("scores"):
            logger.writer.add_histogram("select/chosen_scores", torch.tensor(entry["scores"]), n)
