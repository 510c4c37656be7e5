"""P00's task: train a classifier on MNIST with the lab's trainer.

``build(cfg, device)`` makes everything a run needs (data, model, optimizer, scheduler, loss);
``run(cfg, run_dir, ...)`` trains it. The notebook and ``labkit.done`` call the same two.
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
from labkit.data.mnist import ShiftCollate, load_mnist
from labkit.eval.classification import evaluate_classifier
from labkit.models.cnn import SmallCNN
from labkit.trainers.optim import build_optimizer, build_scheduler
from labkit.trainers.supervised_trainer import TrainResult, train
from labkit.utils.config import get
from labkit.utils.device import device_amp_policy


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
    train_loader = make_loader(train_set, batch_size, seed=cfg["seed"], num_workers=data["num_workers"],
                               collate_fn=ShiftCollate(shift))
    eval_loader = DataLoader(eval_set, batch_size=data["eval_batch_size"], shuffle=False)
    model = SmallCNN(width=cfg["model"]["width"], dropout=0.0 if overfit else cfg["model"]["dropout"])
    model.to(device)
    optim = cfg["optim"]
    optimizer = build_optimizer(model.parameters(), optim["name"], optim["lr"], optim["weight_decay"])
    scheduler = build_scheduler(optimizer, optim["scheduler"], cfg["trainer"]["max_steps"],
                                optim["warmup_steps"])
    return ClassificationSetup(model, optimizer, scheduler, train_loader, eval_loader, train_set,
                               eval_set, source)


def run(cfg: dict, run_dir: str | Path | None, device: torch.device, resume_from: str | Path | None = None,
        stop_after: int | None = None, progress: bool = True) -> tuple[TrainResult, ClassificationSetup]:
    """Build and train; returns the trainer's result (``result.last_eval["eval/accuracy"]``).

    ``stop_after=N`` stops after N steps as if interrupted (the LR schedule still spans
    ``trainer.max_steps``): used to demonstrate and check exact resume.
    """
    setup = build(cfg, device)
    t = cfg["trainer"]
    result = train(
        setup.model, setup.optimizer, setup.train_loader, cross_entropy_loss,
        max_steps=stop_after or t["max_steps"], device=device, scheduler=setup.scheduler,
        amp=device_amp_policy(device, t["amp"]), grad_clip=t["grad_clip"], run_dir=run_dir,
        ckpt_every=t["ckpt_every"], keep_last=t["keep_last"], log_every=t["log_every"],
        eval_every=t["eval_every"], eval_fn=lambda m: evaluate_classifier(m, setup.eval_loader, device),
        resume_from=resume_from, config=cfg, progress=progress,
    )
    return result, setup
