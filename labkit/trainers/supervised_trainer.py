"""The lab's supervised training loop: one short function that every phase reuses.

Reading order: ``train_step`` (one optimizer step: forward under autocast, backward, clip, step),
then ``train`` (the loop around it: epochs, logging, evaluation, checkpoints, resume, stopping).
Explained step by step in notebooks/00_pytorch_warmup.py.

What "exact resume" means here: a run stopped at step N and resumed gives the same losses and
weights as a run that never stopped. That needs five things restored together: model and
optimizer (and scheduler, scaler) state, the data order (an ``EpochSampler`` whose order is a
function of seed and epoch), the position inside the epoch, every RNG state, and the state of
any extra object the phase keeps beside the model (``extra_state``, e.g. P20's EMA weights).

How a phase extends the loop without writing a new one:
- ``before_step(step)``: runs before each optimizer step (e.g. unfreeze a backbone at a step);
- ``after_step(step, out, logger)``: runs after each (e.g. update EMA weights, log an image);
- ``extra_state={"ema": ema}``: objects with ``state_dict``/``load_state_dict`` that ride in
  every checkpoint and are restored on resume.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from labkit.trainers.guards import TrainingDiverged, check_finite_metrics, check_finite_weights
from labkit.trainers.plumbing import LoopPlumbing
from labkit.utils.checkpoint import (
    Checkpoint,
    checkpoint_name,
    load_checkpoint,
    restore_states,
    save_checkpoint,
)
from labkit.utils.device import AMP_OFF, AmpPolicy, device_amp_policy
from labkit.utils.distributed import is_distributed, is_main_process, world_size
from labkit.utils.logging import MetricsLogger, get_logger
from labkit.utils.meters import AverageMeter, ThroughputMeter
from labkit.utils.seed import set_rng_state

log = get_logger(__name__)

# loss_fn(model, batch) -> loss, or (loss, {"part": value, ...}) for extra logged terms
LossFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class Stateful(Protocol):
    """Anything a checkpoint can carry: EMA weights, a running statistic, a data cursor."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


@dataclass
class StepOutput:
    loss: torch.Tensor  # detached scalar
    grad_norm: torch.Tensor | None  # L2 norm of all gradients before clipping (None: not measured)
    parts: dict[str, torch.Tensor | float] = field(default_factory=dict)  # extra logged terms


@dataclass
class TrainResult:
    step: int
    losses: list[float]  # one per optimizer step run in this call
    grad_norms: list[float]  # every step when clipping, else the logging steps only
    eval_history: list[dict[str, float]]
    stopped_by: str  # "max_steps" or the signal's name
    last_checkpoint: Path | None

    @property
    def last_eval(self) -> dict[str, float]:
        return self.eval_history[-1] if self.eval_history else {}


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside nested tuples, lists and dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    loss_fn: LossFn,
    *,
    scaler: torch.amp.GradScaler | None = None,
    amp: AmpPolicy = AMP_OFF,
    grad_clip: float | None = None,
    measure_grad_norm: bool = True,
) -> StepOutput:
    """One optimizer step on one batch (already on the model's device).

    1. forward and loss under autocast (when AMP is on),
    2. backward, on the scaled loss when a GradScaler is used (fp16),
    3. unscale, measure the gradient norm and clip it to ``grad_clip``,
    4. optimizer step (the scaler skips it if fp16 gradients overflowed) and zero the gradients.
    """
    # Entering even a disabled autocast costs a few microseconds a step: skip it when AMP is off.
    autocast = (
        torch.autocast(next(model.parameters()).device.type, dtype=amp.dtype or torch.bfloat16)
        if amp.enabled
        else contextlib.nullcontext()
    )
    with autocast:
        out = loss_fn(model, batch)
    loss, parts = out if isinstance(out, tuple) else (out, {})
    use_scaler = scaler is not None and scaler.is_enabled()
    (scaler.scale(loss) if use_scaler else loss).backward()
    if use_scaler:
        scaler.unscale_(optimizer)  # clip true gradients, not scaled ones
    grad_norm = None
    if grad_clip or measure_grad_norm:  # measuring alone costs a pass over all gradients
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf).detach()
    if use_scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutput(
        loss.detach(),
        grad_norm,
        {k: v.detach() if torch.is_tensor(v) else v for k, v in parts.items()},
    )


def _start_epoch(loader: Any, epoch: int) -> None:
    """Fix the data order (sampler) and the worker seeds (loader generator) for ``epoch``."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(getattr(sampler, "seed", 0) * 1_000_003 + epoch)


def _mean_over_ranks(loss: torch.Tensor, stop: str | None) -> tuple[float, bool]:
    """The step's loss averaged over all processes, and whether any of them got a signal.

    One all-reduce per step under torchrun: every rank logs the same loss, stops on the same
    NaN, and stops at the same step when one of them is interrupted (a rank that stopped alone
    would leave the others waiting for it forever). Alone, it is just ``loss.item()``.
    """
    if not is_distributed():
        return loss.item(), stop is not None
    both = torch.stack(
        [loss.detach().float(), torch.tensor(float(stop is not None), device=loss.device)]
    )
    torch.distributed.all_reduce(both)
    return both[0].item() / world_size(), both[1].item() > 0


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    if isinstance(first, dict):
        first = next(iter(first.values()))
    return len(first) if hasattr(first, "__len__") else 1


def trainer_options(trainer_cfg: dict, device: torch.device, stop_after: int | None = None) -> dict:
    """A config's ``trainer:`` section as keyword arguments of :func:`train`.

    ``stop_after=N`` stops after N steps as if interrupted, while the LR schedule (built by the
    task from ``trainer.max_steps``) still spans the whole run: used to show exact resume.
    """
    t = trainer_cfg
    return {
        "max_steps": stop_after or t["max_steps"],
        "amp": device_amp_policy(device, t["amp"]),
        "grad_clip": t["grad_clip"],
        "ckpt_every": t["ckpt_every"],
        "keep_last": t["keep_last"],
        "log_every": t["log_every"],
        "eval_every": t["eval_every"],
        "profile_memory": t.get("profile_memory", False),
    }


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Any,
    loss_fn: LossFn,
    *,
    max_steps: int,
    device: torch.device | str = "cpu",
    scheduler: Any = None,
    amp: AmpPolicy = AMP_OFF,
    grad_clip: float | None = None,
    run_dir: str | Path | None = None,
    ckpt_every: int = 0,
    keep_last: int = 3,
    log_every: int = 50,
    eval_every: int = 0,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    resume_from: str | Path | Checkpoint | None = None,
    init_from: str | Path | Checkpoint | None = None,
    config: dict | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    before_step: Callable[[int], None] | None = None,
    after_step: Callable[[int, StepOutput, MetricsLogger], None] | None = None,
    extra_state: dict[str, Stateful] | None = None,
    profile_memory: bool = False,
) -> TrainResult:
    """Train ``model`` for ``max_steps`` optimizer steps (counting from a resumed step).

    Args:
        train_loader: an iterable of batches, iterated once per epoch; its ``sampler.set_epoch``
            is called each epoch (use ``labkit.data.common.make_loader`` for exact resume). It
            need not have a length: the loop counts its own position inside the epoch.
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, parts)``; ``batch`` is on ``device``.
        amp: from ``labkit.utils.device.amp_policy``; fp16 brings a GradScaler.
        grad_clip: clip the global gradient L2 norm to this value (``None``: measure only).
        run_dir: where ``metrics.jsonl``, TensorBoard events and ``checkpoints/`` go; ``None`` writes nothing.
        ckpt_every: checkpoint every N steps (and always at the end and on Ctrl-C / SIGTERM).
        eval_every: call ``eval_fn(model)`` every N steps and at the end; keys get ``eval/``.
        resume_from: a checkpoint file (or a :class:`Checkpoint` already read) to continue
            from exactly.
        init_from: a checkpoint whose model weights start this run (fine-tuning, warm starts):
            weights only; optimizer, schedule, step and RNGs start fresh.
        config: saved into every checkpoint.
        before_step: ``before_step(step)`` runs before each optimizer step (0-based step about to
            run), e.g. to unfreeze a backbone at a given step. Make it depend on ``step`` only,
            so that a resumed run does the same.
        after_step: ``after_step(step, out, logger)`` runs after each optimizer step (``step``
            steps done; ``out`` the :class:`StepOutput`; ``logger`` the run's
            :class:`MetricsLogger`, for extra scalars or ``log_image``), before evaluation and
            checkpointing, e.g. to update EMA weights.
        extra_state: ``{name: object}`` with ``state_dict``/``load_state_dict``; saved in every
            checkpoint and restored on resume.
        profile_memory: write ``perf.json`` into ``run_dir`` at the end: peak GPU memory
            (``torch.cuda.max_memory_allocated``), samples per second, seconds per step.

    Raises:
        TrainingDiverged: the loss, an evaluation metric or the weights became NaN/Inf (the
            message names the step); no checkpoint is written for that step.
    """
    device = torch.device(device)
    is_main = is_main_process()
    # Under torchrun the forward/backward runs through DDP (gradients averaged over ranks);
    # `model` itself stays the bare module: it is what checkpoints and evaluation see.
    train_model = model
    if is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    run_dir = Path(run_dir) if run_dir is not None and is_main else None
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp.use_scaler)
    extra_state = extra_state or {}
    step, epoch, batch_in_epoch, rng_to_restore = 0, 0, 0, None
    loss_meter, throughput = AverageMeter("loss"), ThroughputMeter()
    if init_from is not None:
        load_checkpoint(init_from, model, map_location=device)
    if resume_from is not None:
        payload = load_checkpoint(
            resume_from,
            model,
            optimizer,
            scaler if amp.use_scaler else None,
            map_location=device,
            scheduler=scheduler,
        )
        path = getattr(resume_from, "path", resume_from)
        saved = payload["extra"].get("objects") or {}
        restore_states(path, {name: (obj, saved.get(name)) for name, obj in extra_state.items()})
        step, rng_to_restore = payload["step"], payload["rng"]
        epoch, batch_in_epoch = payload["extra"]["position"]
        # the running mean of the logging window in progress, so its first row is right
        loss_meter.sum, loss_meter.count = payload["extra"]["loss_window"]
        log.info("resumed from %s at step %d", path, step)
    result = TrainResult(step, [], [], [], "max_steps", None)
    metrics = MetricsLogger(run_dir, tensorboard=tensorboard)
    loop = LoopPlumbing(
        run_dir, total=max_steps, initial=step, progress=progress and is_main, metrics=metrics
    )

    def checkpoint() -> None:
        if ckpt_dir is not None and loop.once("checkpoint", step):  # not twice for one step
            check_finite_weights(step, model)
            result.last_checkpoint = save_checkpoint(
                ckpt_dir / checkpoint_name(step),
                model,
                optimizer,
                scaler if amp.use_scaler else None,
                step=step,
                config=config,
                scheduler=scheduler,
                keep_last=keep_last,
                position=[epoch, batch_in_epoch],  # where in the data the next step starts
                loss_window=[loss_meter.sum, loss_meter.count],
                objects={name: obj.state_dict() for name, obj in extra_state.items()},
            )

    def evaluate() -> None:
        model.eval()
        with torch.no_grad():
            scores = {f"eval/{k}": float(v) for k, v in eval_fn(model).items()}
        model.train()
        check_finite_metrics(step, scores)
        result.eval_history.append({"step": step, **scores})
        if is_main and step > first_step:  # a resumed finished run: its row is logged already
            metrics.log(step, scores)
            log.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    if profile_memory and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started, first_step, samples = time.perf_counter(), step, 0
    model.train()
    try:
        with loop:  # Ctrl-C / SIGTERM only set loop.stopping in here: the step ends, then we save
            stopping = None  # set only from the per-step sync: every rank stops at the same step
            while step < max_steps and stopping is None:
                _start_epoch(train_loader, epoch)
                batches = iter(train_loader)
                for _ in range(batch_in_epoch):  # skip what this epoch already trained on
                    next(batches)
                if rng_to_restore is not None:  # after skipping, so skipping uses no randomness
                    set_rng_state(rng_to_restore)
                    rng_to_restore = None
                for batch in batches:
                    if before_step is not None:
                        before_step(step)
                    out = train_step(
                        train_model,
                        optimizer,
                        to_device(batch, device),
                        loss_fn,
                        scaler=scaler,
                        amp=amp,
                        grad_clip=grad_clip,
                        measure_grad_norm=(step + 1) % log_every == 0 or step + 1 == max_steps,
                    )
                    if scheduler is not None:
                        scheduler.step()
                    step, batch_in_epoch = step + 1, batch_in_epoch + 1
                    # one sync per step: needed for the NaN check anyway
                    loss, any_stopped = _mean_over_ranks(out.loss, loop.stopping)
                    if any_stopped:
                        stopping = loop.stopping or "SIGTERM"  # or another rank's signal
                    if not math.isfinite(loss):
                        raise TrainingDiverged(
                            f"The loss became {loss} at step {step}; no checkpoint was written for "
                            f"it. Lower the learning rate (optim.lr), set trainer.grad_clip, or "
                            f"run with trainer.overfit=32 to debug on a small fixed batch."
                        )
                    if after_step is not None:
                        after_step(step, out, metrics)
                    result.losses.append(loss)
                    if out.grad_norm is not None:
                        result.grad_norms.append(float(out.grad_norm))
                    loss_meter.update(loss)
                    batch_size = _batch_size(batch)
                    throughput.tick(batch_size)
                    samples += batch_size
                    loop.advance(1)
                    if step % log_every == 0 or step == max_steps:
                        row = {
                            "train/loss": loss_meter.avg,
                            "train/lr": optimizer.param_groups[0]["lr"],
                            "train/grad_norm": float(out.grad_norm),
                            "perf/samples_per_s": throughput.rate(),
                            **{f"train/{k}": float(v) for k, v in out.parts.items()},
                        }
                        if is_main:
                            metrics.log(step, row)
                        loop.bar.set_postfix(loss=f"{loss_meter.avg:.4f}")
                        loss_meter.reset()
                    if eval_fn is not None and eval_every and step % eval_every == 0:
                        evaluate()
                    if ckpt_every and step % ckpt_every == 0:
                        checkpoint()
                    if step >= max_steps or stopping is not None:
                        break
                else:  # the epoch ran out: the next one starts from its first batch
                    epoch, batch_in_epoch = epoch + 1, 0
            if stopping is not None:  # save at once, still shielded from a second Ctrl-C
                result.stopped_by = stopping
                log.warning("%s received: stopping at step %d", stopping, step)
                checkpoint()
        if result.stopped_by == "max_steps":
            evaluated = result.eval_history and result.eval_history[-1]["step"] == step
            if eval_fn is not None and not evaluated:
                evaluate()
            if step > first_step:  # a resumed finished run has its last checkpoint already
                checkpoint()  # eval before checkpoint, as inside the loop: resume sees the same RNG
    except KeyboardInterrupt:  # after the loop (the CLI's handler is back): keep the weights
        checkpoint()
        raise
    finally:
        metrics.close()
    if profile_memory and run_dir is not None:
        _write_perf(run_dir, device, step - first_step, samples, time.perf_counter() - started)
    result.step = step
    if result.last_checkpoint is not None:
        log.info("checkpoint: %s", result.last_checkpoint)
    return result


def _write_perf(run_dir: Path, device: torch.device, steps: int, samples: int, seconds: float):
    """``perf.json``: what the 6 GB budget is checked against (``trainer.profile_memory``)."""
    cuda = device.type == "cuda"
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    record = {
        "device": torch.cuda.get_device_name(device) if cuda else str(device),
        "peak_memory_allocated_bytes": peak,
        "peak_memory_allocated_gib": None if peak is None else round(peak / 2**30, 3),
        "steps": steps,
        "samples_per_process": samples,
        "world_size": world_size(),
        "seconds": round(seconds, 3),
        "samples_per_s": round(samples * world_size() / max(seconds, 1e-9), 2),
        "seconds_per_step": round(seconds / max(steps, 1), 5),
    }
    (run_dir / "perf.json").write_text(json.dumps(record, indent=2))
