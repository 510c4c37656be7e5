"""Data plumbing shared by the phases: resumable sampling, fixed subsets, loaders, errors."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from labkit.utils.seed import seed_worker


class DataError(RuntimeError):
    """Data that cannot be loaded as asked; the message says what to do."""


class EpochSampler(torch.utils.data.Sampler[int]):
    """Random (or sequential) order that is a pure function of ``(seed, epoch)``.

    Why not ``RandomSampler``: it draws its order from the global RNG when iteration starts, so
    a run resumed at step N would see a different order than the run it continues. Here the
    trainer calls ``set_epoch(epoch)`` and the order is always the same for that epoch, which
    is what makes resume exact. ``DistributedSampler`` has the same ``set_epoch`` contract.
    """

    def __init__(self, data: Sized, seed: int = 0, shuffle: bool = True):
        self.num_samples = len(data)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def fixed_subset(dataset: Dataset, size: int, seed: int = 0) -> Subset:
    """``size`` samples chosen once by ``seed``: the overfit harness trains on exactly these."""
    if size > len(dataset):
        raise DataError(f"Asked for a subset of {size} samples but the dataset has {len(dataset)}.")
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:size].tolist()
    return Subset(dataset, indices)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = True,
    collate_fn=None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader with an :class:`EpochSampler`, ready for exact resume.

    ``drop_last`` defaults to True for training: every step then sees a full batch, and the
    number of steps per epoch is fixed, which the trainer uses to find its place on resume.
    """
    if batch_size > len(dataset) and drop_last:
        raise DataError(
            f"batch_size={batch_size} is larger than the dataset ({len(dataset)} samples) and "
            f"drop_last is on, so there would be no batch at all. Lower the batch size."
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(dataset, seed=seed, shuffle=shuffle),
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate_fn,
        worker_init_fn=seed_worker if num_workers else None,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
