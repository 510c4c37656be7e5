"""P00's task: train a classifier on MNIST with the lab's trainer.

``build(cfg, device)`` makes everything a run needs (data, model, optimizer, scheduler, loss);
``run(cfg, run_dir, device, ...)`` seeds, builds and trains it. The CLI
(``python -m labkit.train p00_mnist``), the notebook and ``labkit.done p00`` call the same two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from labkit.data.common import fixed_subset, make_loader
from labkit.trainers.optim import build_optimizer, build_scheduler
from labkit.trainers.supervised_trainer import train, trainer_options
from labkit.utils.checkpoint import Checkpoint
from labkit.utils.config import get
from labkit.utils.device import get_device
from labkit.utils.runs import RunResult, checkpoint_resume_point
from labkit.utils.schema import check_config
from labkit.utils.seed import set_seed
from labkit.warmup.config import Config
from labkit.warmup.data import ShiftCollate, load_mnist
from labkit.warmup.evaluate import evaluate_classifier, misclassified_digits, misclassified_image
from labkit.warmup.model import SmallCNN


def cross_entropy_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The trainer's ``loss_fn`` for classification: images [B, C, H, W], labels [B] → scalar."""
    images, labels = batch
    return F.cross_entropy(model(images), labels)


@dataclass
class ClassificationSetup:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: DataLoader
    eval_loader: DataLoader
    train_set: Dataset
    eval_set: Dataset
    data_source: str


def build(cfg: dict, device: torch.device) -> ClassificationSetup:
    """Data, model, optimizer and scheduler from a P00 config (call ``set_seed`` first)."""
    data = cfg["data"]
    train_set, eval_set, source = load_mnist(data["source"], data["root"], data["holdout"])
    batch_size = data["batch_size"]
    overfit = get(cfg, "trainer.overfit", 0)
    if overfit:  # the overfit harness: a fixed handful of samples, trained on and judged on
        train_set = eval_set = fixed_subset(train_set, overfit, seed=cfg["seed"])
        batch_size = min(batch_size, overfit)
    shift = 0 if overfit else data["max_shift"]  # no augmentation in the overfit harness
    train_loader = make_loader(
        train_set,
        batch_size,
        seed=cfg["seed"],
        num_workers=data["num_workers"],
        collate_fn=ShiftCollate(shift),
    )
    eval_loader = DataLoader(eval_set, batch_size=data["eval_batch_size"], shuffle=False)
    model = SmallCNN(
        width=cfg["model"]["width"], dropout=0.0 if overfit else cfg["model"]["dropout"]
    )
    model.to(device)
    optim = cfg["optim"]
    optimizer = build_optimizer(
        model.parameters(), optim["name"], optim["lr"], optim["weight_decay"]
    )
    scheduler = build_scheduler(
        optimizer, optim["scheduler"], cfg["trainer"]["max_steps"], optim["warmup_steps"]
    )
    return ClassificationSetup(
        model, optimizer, scheduler, train_loader, eval_loader, train_set, eval_set, source
    )


def check(cfg: dict) -> dict:
    """``cfg`` checked against the phase's schema (types, ranges, choices); ``ConfigError`` if not."""
    return check_config(cfg, Config)


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
    """Seed, build and train; ``result.summary["eval/accuracy"]`` is the held-out accuracy.

    Args:
        device: where to train (``None``: the config's ``device``, resolved here).
        stop_after: stop after N steps as if interrupted (the LR schedule still spans
            ``trainer.max_steps``): used to demonstrate and check exact resume.

    Returns:
        ``summary`` (step, stopped_by, data source, final ``eval/*``), ``details`` (the
        trainer's ``TrainResult``: losses, gradient norms, evaluations) and ``setup``.
    """
    cfg = check(cfg)
    device = device or get_device(cfg["device"])
    set_seed(cfg["seed"], deterministic=cfg["deterministic"])
    setup = build(cfg, device)
    options = trainer_options(cfg["trainer"], device, stop_after)

    def show_mistakes(step: int, _out, logger) -> None:  # TensorBoard: "eval/misclassified"
        every = options["eval_every"]
        if run_dir is not None and ((every and step % every == 0) or step == options["max_steps"]):
            # iterating a DataLoader draws its base seed from the global RNG: keep training's
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                wrong = misclassified_digits(setup.model, setup.eval_loader, device)
            logger.log_image("eval/misclassified", misclassified_image(*wrong), step)

    result = train(
        setup.model,
        setup.optimizer,
        setup.train_loader,
        cross_entropy_loss,
        device=device,
        scheduler=setup.scheduler,
        run_dir=run_dir,
        eval_fn=lambda m: evaluate_classifier(m, setup.eval_loader, device),
        resume_from=resume_from,
        init_from=init_from,
        config=cfg,
        progress=progress,
        after_step=show_mistakes,
        **options,
    )
    summary = {
        "step": result.step,
        "stopped_by": result.stopped_by,
        "data": setup.data_source,
        **result.last_eval,
    }
    return RunResult(summary, result, setup)


resume_point = checkpoint_resume_point  # the trainer resumes from checkpoints/step_*.pt
