"""Running the detector over the unlabelled pool: what every selector needs, in one pass.

``labkit.detection.evaluate.predict`` gives each frame's detections. Two more things come from
the same forward pass, recorded by forward hooks while ``predict`` runs (no second pass):

* ``p_max [N]``: each frame's highest class probability over all grid cells, before the score
  threshold and NMS — the score of frames without detections (``labkit.active.uncertainty``);
* ``features [N, D]``: the backbone's feature map averaged over the grid and L2-normalised
  (D = 128 channels at stride 8) — what the diversity-aware selector measures distances in.

:func:`mc_passes` repeats the inference T times with dropout sampling (``MCDropoutDetector``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from labkit.active.mc_dropout import MCDropoutDetector, detector_of
from labkit.active.pool import LabelledSet
from labkit.detection.dataset import detection_collate
from labkit.detection.evaluate import predict

__all__ = ["PoolOutputs", "infer_pool", "mc_passes"]


@dataclass
class PoolOutputs:
    """A model's view of N pool frames, in the order of ``ids``."""

    ids: list[int]
    preds: list[dict[str, Tensor]]  # predict's dicts: boxes [D, 4], scores [D], labels [D]
    p_max: Tensor  # [N] top cell probability of each frame
    features: Tensor  # [N, D] pooled, L2-normalised backbone features


def infer_pool(
    model: nn.Module,
    pool: Dataset,
    ids: list[int],
    device: torch.device,
    score_thresh: float = 0.05,
    nms_iou: float = 0.5,
    max_dets: int = 100,
    batch_size: int = 100,
) -> PoolOutputs:
    """``predict`` over the frames ``ids`` of ``pool``, with ``p_max`` and features recorded."""
    detector = detector_of(model)
    p_max, features = [], []

    def record_scores(_module, _inputs, out: dict[str, Tensor]) -> None:
        p_max.append(out["cls_logits"].detach().float().sigmoid().flatten(1).max(dim=1).values)

    def record_features(_module, _inputs, out: Tensor) -> None:
        features.append(F.normalize(out.detach().float().mean(dim=(2, 3)), dim=1))  # [B, D]

    loader = DataLoader(
        LabelledSet(pool, ids), batch_size=batch_size, shuffle=False, collate_fn=detection_collate
    )
    handles = [
        detector.register_forward_hook(record_scores),
        detector.backbone.register_forward_hook(record_features),
    ]
    try:
        preds, _ = predict(model, loader, device, score_thresh, nms_iou, max_dets)
    finally:
        for handle in handles:
            handle.remove()
    if not ids:
        return PoolOutputs([], [], torch.zeros(0), torch.zeros(0, 0))
    return PoolOutputs(list(ids), preds, torch.cat(p_max).cpu(), torch.cat(features).cpu())


def mc_passes(
    model: MCDropoutDetector,
    pool: Dataset,
    ids: list[int],
    device: torch.device,
    passes: int,
    seed: int = 0,
    **predict_kwargs,
) -> list[PoolOutputs]:
    """``passes`` dropout-sampled :func:`infer_pool` runs; the dropout masks are drawn from a
    generator seeded with ``seed`` (the global RNG is left as it was)."""
    if not isinstance(model, MCDropoutDetector) or model.p <= 0:
        raise ValueError(
            "MC dropout needs the detector wrapped in MCDropoutDetector with p > 0 "
            "(set active.dropout > 0)"
        )
    was_sampling = model.sample
    model.sample = True
    try:
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)  # seeds the CUDA generators too
            return [infer_pool(model, pool, ids, device, **predict_kwargs) for _ in range(passes)]
    finally:
        model.sample = was_sampling
