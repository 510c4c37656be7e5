"""Data plumbing shared by the phases: resumable sampling, fixed subsets, loaders, errors."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from labkit.utils.distributed import rank, world_size
from labkit.utils.seed import seed_worker


class DataError(RuntimeError):
    """Data that cannot be loaded as asked; the message says what to do."""


class EpochSampler(torch.utils.data.Sampler[int]):
    """Random (or sequential) order that is a pure function of ``(seed, epoch)``.

    Why not ``RandomSampler``: it draws its order from the global RNG when iteration starts, so
    a run resumed at step N would see a different order than the run it continues. Here the
    trainer calls ``set_epoch(epoch)`` and the order is always the same for that epoch, which
    is what makes resume exact. ``DistributedSampler`` has the same ``set_epoch`` contract.

    Under torchrun (``num_replicas`` > 1) rank r takes positions r, r + W, r + 2W, ... of the
    epoch's order, cut to the same length on every rank. With per-rank batches of B / W, the
    k-th batches of all ranks together are exactly the k-th global batch of B a single process
    would see, so N processes train on the same batches as one.
    """

    def __init__(
        self,
        data: Sized,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        num_replicas: int = 1,
    ):
        self.num_samples = len(data)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.rank, self.num_replicas = rank, num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        return iter(order[self.rank :: self.num_replicas][: len(self)])

    def __len__(self) -> int:
        return self.num_samples // self.num_replicas


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

    ``batch_size`` is the global batch: under torchrun with W processes each rank loads
    ``batch_size / W`` samples a step (it must divide), so a config means the same training on
    one process and on many. ``drop_last`` defaults to True for training: every step then sees
    a full batch, and the number of steps per epoch is fixed.
    """
    replicas = world_size()
    if batch_size % replicas:
        raise DataError(
            f"The global batch size {batch_size} does not split over {replicas} processes; "
            f"choose data.batch_size as a multiple of --nproc_per_node."
        )
    batch_size //= replicas
    if batch_size > len(dataset) and drop_last:
        raise DataError(
            f"batch_size={batch_size} is larger than the dataset ({len(dataset)} samples) and "
            f"drop_last is on, so there would be no batch at all. Lower the batch size."
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(dataset, seed, shuffle, rank=rank(), num_replicas=replicas),
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate_fn,
        worker_init_fn=seed_worker if num_workers else None,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
