"""A small CNN classifier: P00's model, reused later as a judge of generated digits."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and a two-layer head; about 0.1 M parameters at the defaults.

    Input ``[B, C, 28, 28]`` → logits ``[B, num_classes]``.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, width: int = 16, dropout: float = 0.1
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),  # (B, w, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 3, padding=1),  # (B, 2w, 14, 14)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, 2w, 7, 7)
        )
        self.head = nn.Sequential(
            nn.Flatten(),  # (B, 2w*49)
            nn.Dropout(dropout),
            nn.Linear(2 * width * 7 * 7, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (28, 28):
            raise ValueError(f"SmallCNN expects images [B, C, 28, 28], got {tuple(x.shape)}.")
        return self.head(self.features(x))
