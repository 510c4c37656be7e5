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


@torch.no_grad()
def misclassified_digits(
    model: nn.Module, loader, device: torch.device | str = "cpu", limit: int = 16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``limit`` held-out images the model gets wrong: ``(images [K, 1, H, W],
    true labels [K], predicted labels [K])``, K <= limit (0 when everything is right)."""
    was_training = model.training
    model.eval()
    images, truths, guesses = [], [], []
    for x, y in loader:
        pred = model(x.to(device)).argmax(dim=1).cpu()
        wrong = pred != y
        images.append(x[wrong])
        truths.append(y[wrong])
        guesses.append(pred[wrong])
        if sum(len(t) for t in truths) >= limit:
            break
    model.train(was_training)
    return torch.cat(images)[:limit], torch.cat(truths)[:limit], torch.cat(guesses)[:limit]


def misclassified_image(images: torch.Tensor, truths: torch.Tensor, guesses: torch.Tensor):
    """A grid of misclassified digits, each titled "true → predicted", as an RGB array
    ``[3, H, W]`` in [0, 1] for TensorBoard (``MetricsLogger.log_image``)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = 8
    rows = max(1, -(-len(images) // cols))
    fig = Figure(figsize=(cols * 1.1, rows * 1.3), dpi=80)
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i, 0].numpy(), cmap="gray")
            ax.set_title(f"{int(truths[i])} → {int(guesses[i])}", fontsize=9, color="crimson")
    if not len(images):
        fig.text(0.5, 0.5, "no held-out digit is misclassified", ha="center", va="center")
    fig.suptitle("held-out digits the model gets wrong (true → predicted)", fontsize=9)
    canvas = FigureCanvasAgg(fig)  # drawn off screen: no pyplot, no backend switch
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255.0
