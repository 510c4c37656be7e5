"""Several processes, one run: the little the lab needs from ``torch.distributed``.

``torchrun --nproc_per_node=N -m labkit.train CONFIG`` starts N copies of the CLI with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. Each copy calls :func:`init_distributed`
(NCCL on GPUs, gloo on CPUs); the trainer then wraps the model in DistributedDataParallel, the
sampler gives each rank its share of every global batch, and only rank 0 writes the run folder.
Without torchrun everything here is a no-op: one process is rank 0 of a world of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def launched_world_size() -> int:
    """How many processes torchrun started for this run (1 without torchrun), known before the
    process group is joined."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    return launched_world_size() > 1


def init_distributed(device: torch.device) -> torch.device:
    """Join the process group torchrun set up; return this rank's device.

    On CUDA each rank takes ``cuda:LOCAL_RANK`` and talks NCCL; on the CPU, gloo.
    """
    if not launched_by_torchrun() or is_distributed():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def all_agree(ok: bool) -> bool:
    """True on every rank only when ``ok`` is True on every rank (a collective: all must call)."""
    if not is_distributed():
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()
