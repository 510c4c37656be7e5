"""P10's task: train the tiny one-stage detector on synthetic shapes (offline) or PASCAL VOC.

``build(cfg, device)`` makes everything a run needs (data, model, optimizer, scheduler);
``run(cfg, run_dir, ...)`` trains it with the lab's trainer and evaluates mAP@0.5 on the
validation images. The notebook (notebooks/10_detection_tiny.py), ``python -m labkit.train
p10_detection`` and ``python -m labkit.done p10`` all call the same two functions.

Two training stages, both set by the config:

1. steps ``0 .. model.unfreeze_at - 1``: the backbone is frozen (weights and BatchNorm
   statistics) and only the head learns, so the large, random early gradients of a fresh head
   cannot wreck pretrained features;
2. from step ``model.unfreeze_at`` on: the backbone trains too, at ``optim.lr *
   model.backbone_lr_scale``.

The optimizer holds both parameter groups from the start: a frozen parameter has no gradient,
and AdamW skips parameters without one, so nothing needs rebuilding at the switch, and the
switch is a pure function of the step (``before_step``), so a resumed run switches at the same
step as one that never stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from labkit.data.common import fixed_subset, make_loader
from labkit.detection.config import Config
from labkit.detection.dataset import build_datasets, detection_collate
from labkit.detection.evaluate import evaluate_detector, predict
from labkit.detection.losses import detection_loss
from labkit.detection.model import TinyDetector
from labkit.detection.visualize import prediction_grid
from labkit.trainers.optim import build_optimizer, build_scheduler
from labkit.trainers.supervised_trainer import StepOutput, train, trainer_options
from labkit.utils.checkpoint import Checkpoint
from labkit.utils.config import ConfigError, get
from labkit.utils.device import get_device
from labkit.utils.logging import MetricsLogger
from labkit.utils.runs import RunResult, checkpoint_resume_point
from labkit.utils.schema import check_config
from labkit.utils.seed import set_seed


def check(cfg: dict) -> dict:
    """``cfg`` checked against the phase's schema (types, ranges, choices); ``ConfigError`` if not."""
    return check_config(cfg, Config)


# ---------------------------------------------------------------------------------------------
# The pieces (P40 builds its rounds from them): datasets (``dataset.build_datasets``), model,
# optimizer and schedule, loss


def build_model(cfg: dict, num_classes: int, device: torch.device) -> TinyDetector:
    """The detector of the config's ``model`` section, on ``device`` (every part trainable).

    Draws its initial weights from the global RNG: seed first for a reproducible start.
    """
    m = cfg["model"]
    try:
        model = TinyDetector(
            num_classes=num_classes,
            backbone=m["backbone"],
            pretrained=m["pretrained"],
            stride=m["stride"],
            freeze_backbone=False,  # both parameter groups go into the optimizer first
            head_channels=m["head_channels"],
            backbone_weights=m["backbone_weights"],
        )
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        # No weights download, a wrong state dict, a bad backbone name: the message already says
        # what to change; as a ConfigError the CLI prints it without a traceback.
        raise ConfigError(f"model: {error}") from error
    return model.to(device)


def build_optimization(cfg: dict, model: TinyDetector) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (or SGD) over the head and backbone groups, and the LR schedule over
    ``trainer.max_steps``; leaves the backbone in the stage of step 0 (``model.unfreeze_at``)."""
    optim, m = cfg["optim"], cfg["model"]
    groups = model.param_groups(optim["lr"] * m["backbone_lr_scale"], optim["lr"])
    model.set_backbone_trainable(m["unfreeze_at"] <= 0)  # after the groups: both are listed
    optimizer = build_optimizer(groups, optim["name"], optim["lr"], optim["weight_decay"])
    # One LR multiplier for both groups: the backbone keeps its ratio to the head throughout.
    scheduler = build_scheduler(
        optimizer, optim["scheduler"], cfg["trainer"]["max_steps"], optim["warmup_steps"]
    )
    return optimizer, scheduler


class DetectionLoss:
    """The trainer's ``loss_fn``: ``(model, (images [B, 3, H, W], B targets)) -> (loss, parts)``."""

    def __init__(self, loss_cfg: dict):
        self.kwargs = dict(loss_cfg)

    def __call__(self, model: TinyDetector, batch: tuple[Tensor, list[dict]]):
        images, targets = batch
        return detection_loss(model(images), targets, stride=model.stride, **self.kwargs)


# ---------------------------------------------------------------------------------------------
# Build and run


@dataclass
class DetectionSetup:
    model: TinyDetector
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: DataLoader
    eval_loader: DataLoader
    train_set: Dataset
    eval_set: Dataset
    class_names: tuple[str, ...]
    loss_fn: DetectionLoss

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build(cfg: dict, device: torch.device) -> DetectionSetup:
    """Data, model, optimizer and scheduler from a P10 config (call ``set_seed`` first)."""
    data = cfg["data"]
    overfit = get(cfg, "trainer.overfit", 0)
    train_set, eval_set, class_names = build_datasets(cfg, augment=not overfit)
    batch_size = data["batch_size"]
    if overfit:  # the overfit harness: a fixed handful of images, trained on and judged on
        train_set = eval_set = fixed_subset(train_set, overfit, seed=cfg["seed"])
        batch_size = min(batch_size, overfit)
    train_loader = make_loader(
        train_set,
        batch_size,
        seed=cfg["seed"],
        num_workers=data["num_workers"],
        collate_fn=detection_collate,
        pin_memory=device.type == "cuda",
    )
    eval_loader = DataLoader(
        eval_set,
        batch_size=data["eval_batch_size"],
        shuffle=False,
        num_workers=data["num_workers"],
        collate_fn=detection_collate,
        # Its own generator: starting an iterator draws a seed, and drawing it from the global
        # RNG would shift the training flips after each evaluation (results would depend on
        # trainer.eval_every).
        generator=torch.Generator(),
    )
    model = build_model(cfg, len(class_names), device)
    optimizer, scheduler = build_optimization(cfg, model)
    return DetectionSetup(
        model,
        optimizer,
        scheduler,
        train_loader,
        eval_loader,
        train_set,
        eval_set,
        class_names,
        DetectionLoss(cfg["loss"]),
    )


class BackboneStage:
    """``before_step`` hook: backbone frozen before ``unfreeze_at``, trainable from it on.

    A pure function of the step: a resumed run is in the same stage as the run it continues.
    """

    def __init__(self, model: TinyDetector, unfreeze_at: int):
        self.model, self.unfreeze_at = model, unfreeze_at

    def __call__(self, step: int) -> None:
        trainable = step >= self.unfreeze_at
        if trainable != self.model.backbone_trainable:
            self.model.set_backbone_trainable(trainable)


class PredictionImages:
    """``after_step`` hook: at each evaluation step, draw a few validation images with their
    detections (``eval/predictions`` in TensorBoard; green: ground truth, red: detections)."""

    def __init__(self, setup: DetectionSetup, device: torch.device, eval_cfg: dict, every: int):
        shown = [setup.eval_set[i] for i in range(min(eval_cfg["log_images"], len(setup.eval_set)))]
        self.images, self.targets = detection_collate(shown)
        self.setup, self.device, self.eval_cfg, self.every = setup, device, eval_cfg, every

    def __call__(self, step: int, out: StepOutput, logger: MetricsLogger) -> None:
        if logger.writer is None or not self.every or step % self.every:
            return
        batch = [(self.images, self.targets)]
        preds, _ = predict(self.setup.model, batch, self.device, self.eval_cfg["score_thresh"])
        grid = prediction_grid(
            self.images, preds, self.targets, self.setup.class_names, self.eval_cfg["report_score"]
        )
        logger.log_image("eval/predictions", grid, step)


resume_point = checkpoint_resume_point  # a run continues from its newest checkpoint


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
    """Seed, build and train; ``result.summary["eval/map50"]`` is the held-out mAP@0.5.

    With a ``run_dir``, each evaluation step also logs a grid of validation predictions to
    TensorBoard through the trainer's logger (``eval/predictions``).

    Args:
        device: where to train (``None``: the config's ``device``, resolved here).
        stop_after: stop after N steps as if interrupted (the LR schedule still spans
            ``trainer.max_steps``): used to check exact resume.

    Returns:
        ``summary`` (step, stopped_by, data set, final ``eval/*``), ``details`` (the trainer's
        ``TrainResult``) and ``setup`` (:class:`DetectionSetup`).
    """
    cfg = check(cfg)
    device = device or get_device(cfg["device"])
    set_seed(cfg["seed"], deterministic=cfg["deterministic"])
    setup = build(cfg, device)
    trainer, eval_cfg = cfg["trainer"], cfg["eval"]
    draw = run_dir is not None and eval_cfg["log_images"] > 0  # images need a TensorBoard
    images = PredictionImages(setup, device, eval_cfg, trainer["eval_every"]) if draw else None
    eval_cpu = [0.0]  # process CPU seconds spent evaluating, kept apart from training's

    def evaluate(model: TinyDetector) -> dict[str, float]:
        start = time.process_time()
        scores = evaluate_detector(
            model, setup.eval_loader, device, setup.num_classes, setup.class_names, eval_cfg
        )
        eval_cpu[0] += time.process_time() - start
        return scores

    cpu_start = time.process_time()  # CPU time, not wall time: the machine may be shared
    result = train(
        setup.model,
        setup.optimizer,
        setup.train_loader,
        setup.loss_fn,
        device=device,
        scheduler=setup.scheduler,
        run_dir=run_dir,
        eval_fn=evaluate,
        resume_from=resume_from,
        init_from=init_from,
        config=cfg,
        progress=progress,
        before_step=BackboneStage(setup.model, cfg["model"]["unfreeze_at"]),
        after_step=images,
        **trainer_options(trainer, device, stop_after),
    )
    cpu_seconds = time.process_time() - cpu_start
    summary = {
        "step": result.step,
        "cpu/train_seconds": cpu_seconds - eval_cpu[0],  # this process, every thread
        "cpu/eval_seconds": eval_cpu[0],
        "stopped_by": result.stopped_by,
        "data": cfg["data"]["dataset"],
        **result.last_eval,
    }
    return RunResult(summary, result, setup)
