"""Evaluation of classifiers: accuracy and mean loss over a loader."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, loader, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``loader`` batches ``(x [B,...], y [B])``."""
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)  # (B, num_classes)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
        total += len(y)
    model.train(was_training)
    return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}
