"""The pool-based active-learning loop, one (selector, seed) at a time.

    labelled L_0 (``initial_labelled`` frames drawn by the seed)
    for round r = 0 .. R:
      1. train    the detector from scratch on L_r           (labkit.detection.task.build + trainer)
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

**Labelling**: :class:`SimulatedLabeller` reveals the pool's ground truth; with
:class:`ManualLabeller` the loop writes the ids it needs into ``to_label.json`` and stops
(:class:`LabelsPending`) until ``labels.json`` holds their boxes; rerun with resume to go on.
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

from labkit.active.mc_dropout import MCDropoutDetector
from labkit.active.pool import LabelledSet
from labkit.active.selectors import ScoringContext, Selector, check_selection
from labkit.data.common import DataError, make_loader
from labkit.detection.dataset import RandomHorizontalFlip, detection_collate
from labkit.detection.evaluate import evaluate_detector
from labkit.detection.task import BackboneStage, build
from labkit.trainers.supervised_trainer import train, trainer_options
from labkit.utils.config import ConfigError
from labkit.utils.logging import MetricsLogger
from labkit.utils.seed import set_seed

__all__ = [
    "LoopState",
    "LabelsPending",
    "SimulatedLabeller",
    "ManualLabeller",
    "LoopInterrupted",
    "initial_ids",
    "round_seed",
    "train_round",
    "run_loop",
]


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
# Labelling


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
            raise LabelsPending(
                f"{len(missing)} frames need labels: their ids are in {self.folder / 'to_label.json'}. "
                f"Add their boxes to {self.labels_file} and run again with resume."
            )
        return {
            i: {
                "boxes": torch.tensor(known[str(i)]["boxes"], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(known[str(i)]["labels"], dtype=torch.int64),
            }
            for i in ids
        }


class _TargetsOf(Dataset):
    """Pool images with targets from a labeller (a person's boxes may differ from the truth)."""

    def __init__(self, pool: Dataset, targets: dict[int, dict[str, Tensor]]):
        self.pool, self.labels = pool, targets

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, index: int):
        return self.pool[index][0], self.labels[index]


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


class LoopInterrupted(RuntimeError):
    """Training stopped on Ctrl-C / SIGTERM; the loop's last finished round is saved."""


# ---------------------------------------------------------------------------------------------
# One round


def train_round(
    cfg: dict,
    pool: Dataset,
    ids: list[int],
    targets: dict[int, dict[str, Tensor]],
    device: torch.device,
    seed: int,
    init_state: dict | None = None,
):
    """Train a fresh detector (``init_state``: start from these weights) on frames ``ids``.

    ``labkit.detection.task.build`` makes the model, optimizer, schedule and loss from the
    config's P10 sections; the loader runs over the labelled frames with P10's random flip; the
    lab's trainer runs ``trainer.max_steps`` steps. Returns ``(MCDropoutDetector, setup, result)``.
    """
    set_seed(seed, deterministic=cfg["deterministic"])
    setup = build(cfg, device)
    if init_state is not None:
        setup.model.load_state_dict(init_state)
    model = MCDropoutDetector(setup.model, p=cfg["active"]["dropout"])
    data = cfg["data"]
    flip = RandomHorizontalFlip(data["flip"]) if data["flip"] > 0 else None
    labelled = LabelledSet(_TargetsOf(pool, targets), ids, transform=flip)
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
        setup.optimizer,
        loader,
        setup.loss_fn,
        device=device,
        scheduler=setup.scheduler,
        run_dir=None,  # the loop logs per round; a checkpoint per round would be 30 MB each
        config=cfg,
        progress=False,
        before_step=BackboneStage(setup.model, cfg["model"]["unfreeze_at"]),
        **trainer_options(trainer_cfg, device),
    )
    return model, setup, result


def _evaluate(model, setup, val_loader: DataLoader, device, cfg) -> dict[str, float]:
    scores = evaluate_detector(
        model, val_loader, device, setup.num_classes, setup.class_names, cfg["eval"]
    )
    return {f"eval/{k}": float(v) for k, v in scores.items()}


# ---------------------------------------------------------------------------------------------
# The loop


def run_loop(
    cfg: dict,
    selector: Selector,
    seed: int,
    pool: Dataset,
    val_loader: DataLoader,
    device: torch.device,
    *,
    folder: str | Path | None = None,
    labeller: SimulatedLabeller | ManualLabeller | None = None,
    resume: bool = False,
    round_cache: dict | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_round: Callable[[LoopState], None] | None = None,
) -> LoopState:
    """Run (or continue) the loop of ``selector`` with ``seed`` for ``active.rounds`` rounds.

    Args:
        pool: the unlabelled frames (``labkit.active.pool``); ``val_loader``: the held-out set.
        folder: where ``state.json``, ``metrics.jsonl``, ``rounds.jsonl`` and ``tb/`` go
            (``None``: nothing written).
        resume: continue the ``state.json`` in ``folder`` (without: a state there is an error).
        labeller: default :class:`SimulatedLabeller` (or per ``active.labelling``).
        round_cache: a dict shared by the loops of one seed: a (round, labelled set) already
            trained by another selector is reused (round 0 always is); not with warm starts.
        should_stop: checked before each round; True stops (the state stays resumable).
        on_round: called with the state after each finished round (progress bars).

    Returns:
        The :class:`LoopState`; ``history[r]`` holds round r's labelled count, ``eval/*``
        metrics, and (but for the last round) the chosen ids and their scores.
    """
    active = cfg["active"]
    rounds, k = active["rounds"], active["k"]
    settings = loop_settings(cfg)
    folder = Path(folder) if folder is not None else None
    state_path = folder / "state.json" if folder is not None else None
    if state_path is not None and state_path.exists():
        if not resume:
            raise ConfigError(f"{state_path} exists: pass resume=True to continue that loop")
        state = LoopState.load(state_path)
        if (state.selector, state.seed, state.settings) != (selector.name, seed, settings):
            raise ConfigError(
                f"{state_path} belongs to another experiment (selector {state.selector}, seed "
                f"{state.seed}, settings {state.settings}); resume with the config that made it."
            )
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
            if should_stop is not None and should_stop():
                break
            r = state.rounds_done
            start = time.perf_counter()
            init = weights if active["warm_start"] and r > 0 else None
            model, setup, metrics = _train_and_evaluate(
                cfg, pool, state, labeller, val_loader, device, init, round_cache
            )
            trained = time.perf_counter()
            entry = {"round": r, "labelled": len(state.labelled), **metrics}
            if r < rounds:
                chosen, chosen_scores = _select(cfg, selector, model, pool, state, device, k)
                entry.update(chosen=chosen, scores=chosen_scores)
            entry["seconds"] = {"train": trained - start, "select": time.perf_counter() - trained}
            if hasattr(getattr(pool, "source", None), "composition"):
                entry["composition"] = pool.source.composition(state.labelled)
            weights = {n: t.detach().clone() for n, t in model.detector.state_dict().items()}
            if active["warm_start"] and folder is not None:
                torch.save(weights, folder / f"model_round{r}.pt")
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
    return state


def _train_and_evaluate(cfg, pool, state, labeller, val_loader, device, init, round_cache):
    """Round r's model and its held-out metrics, from ``round_cache`` when it holds them."""
    r, seed = state.rounds_done, state.seed
    key = (seed, r, tuple(state.labelled))  # in order: the order sets the data order
    use_cache = round_cache is not None and (r == 0 or not cfg["active"]["warm_start"])
    if use_cache and key in round_cache:
        # The same training another selector ran (same seed, round, frames): rebuild and load.
        set_seed(round_seed(seed, r), deterministic=cfg["deterministic"])
        setup = build(cfg, device)
        setup.model.load_state_dict(round_cache[key]["weights"])
        model = MCDropoutDetector(setup.model, p=cfg["active"]["dropout"])
        return model, setup, dict(round_cache[key]["metrics"])
    targets = labeller.targets(state.labelled)
    model, setup, result = train_round(
        cfg, pool, state.labelled, targets, device, round_seed(seed, r), init
    )
    if result.stopped_by != "max_steps":
        raise LoopInterrupted(
            f"{result.stopped_by} during round {r} of {state.selector} seed {seed}; the "
            "finished rounds are saved: resume to continue"
        )
    metrics = _evaluate(model, setup, val_loader, device, cfg)
    if use_cache:
        weights = {n: t.detach().clone() for n, t in setup.model.state_dict().items()}
        round_cache[key] = {"weights": weights, "metrics": dict(metrics)}
    return model, setup, metrics


def loop_settings(cfg: dict) -> dict[str, Any]:
    """The config values a loop's result depends on (a resumed loop must have the same)."""
    active = {k: v for k, v in cfg["active"].items() if k not in ("selectors", "seeds")}
    return json.loads(json.dumps({
        "active": active, "data": cfg["data"], "model": cfg["model"], "loss": cfg["loss"],
        "optim": cfg["optim"], "max_steps": cfg["trainer"]["max_steps"], "eval": cfg["eval"],
    }))  # fmt: skip


def _select(cfg, selector, model, pool, state: LoopState, device, k: int):
    """Score the unlabelled frames and choose K; the invariants are checked, loudly."""
    labelled = set(state.labelled)
    pool_ids = [i for i in range(len(pool)) if i not in labelled]
    active, eval_cfg = cfg["active"], cfg["eval"]
    context = ScoringContext(
        model,
        pool,
        device,
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
