"""Reproducibility in one place: seed every random number generator the lab uses.

Explained in notebooks/00_pytorch_warmup.py ("Seeds and exact resume").
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and every CUDA device) and set the cuDNN flags.

    Args:
        seed: any integer; the run name carries it so a result can be reproduced.
        deterministic: also ask torch for deterministic kernels (slower on the GPU; on the CPU
            the lab's ops are deterministic already). cuDNN autotuning is turned off then,
            because it may pick a different convolution algorithm on every run.

    Returns:
        A ``torch.Generator`` seeded with ``seed``, for DataLoaders and samplers, so that the
        data order does not depend on how much the global generator was used before.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"set_seed expects an int seed, got {seed!r} ({type(seed).__name__}).")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy's legacy seeding takes 32-bit seeds only
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # lazy: a no-op until CUDA is initialised
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(False)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy and ``random`` seeds from torch's per-worker seed.

    torch seeds each worker as ``base_seed + worker_id``; NumPy and ``random`` would otherwise
    start identical in every worker and repeat the same augmentations.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state as plain types and tensors (readable by ``torch.load(weights_only=True)``)."""
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "cached_gaussian": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np_ = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_["bit_generator"],
            "state": {"key": np_["key"].numpy().astype(np.uint32), "pos": np_["pos"]},
            "has_gauss": np_["has_gauss"],
            "gauss": np_["cached_gaussian"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
