"""Checkpoints that survive crashes and resume exactly.

A checkpoint holds the model, optimizer, scheduler and GradScaler states, the step, the config
that made it and every RNG state, all as tensors and plain Python types so that
``torch.load(weights_only=True)`` can read it: the lab never unpickles arbitrary objects.
Files are written atomically (temporary file, fsync, rename), so an interrupted save never
leaves a half-written checkpoint behind. Explained in notebooks/00_pytorch_warmup.py.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labkit.utils.seed import get_rng_state

FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint taken after ``step`` optimizer steps (sorts by step)."""
    return f"step_{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """``step_*.pt`` files in ``directory``, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _STEP_FILE.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_FILE.match(p.name).group(1)))


def latest_checkpoint(path: str | Path) -> Path:
    """Resolve a checkpoint file, a ``checkpoints/`` folder or a run folder to the newest file."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path, path / "checkpoints"):
        found = list_checkpoints(folder)
        if found:
            return found[-1]
    raise CheckpointError(
        f"No checkpoint at '{path}': expected a .pt file, a checkpoints/ folder or a run folder "
        f"holding checkpoints/step_*.pt. List them with `ls runs/*/*/checkpoints`."
    )


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file read once: its path and its payload (see :func:`read_checkpoint`).

    The CLI reads a resume checkpoint once (to find its config and step) and hands this on, so
    the training loop restores from the same payload instead of reading the file again.
    """

    path: Path
    payload: dict

    @property
    def step(self) -> int:
        return int(self.payload["step"])

    @property
    def config(self) -> dict | None:
        return self.payload.get("config")


def open_checkpoint(path: str | Path | Checkpoint) -> Checkpoint:
    """Resolve ``path`` (file, ``checkpoints/`` folder or run folder) and read it once."""
    if isinstance(path, Checkpoint):
        return path
    found = latest_checkpoint(path)
    return Checkpoint(found, read_checkpoint(found))


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def _state(obj: Any) -> Any:
    return obj.state_dict() if obj is not None and hasattr(obj, "state_dict") else obj


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler | None = None,
    step: int = 0,
    config: dict | None = None,
    *,
    scheduler: Any = None,
    keep_last: int | None = None,
    **extra: Any,
) -> Path:
    """Write a checkpoint atomically and optionally prune older ``step_*.pt`` files beside it.

    Args:
        path: target file; name it with :func:`checkpoint_name` to let ``keep_last`` prune.
        model, optimizer, scaler, scheduler: objects whose ``state_dict()`` is saved.
        step: optimizer steps completed when the checkpoint was taken.
        config: the resolved config that made the run (plain types).
        keep_last: keep only this many ``step_*.pt`` files in the folder (newest kept).
        **extra: more plain values or objects with ``state_dict()`` (e.g. ``ema=...``).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": _state(optimizer),
        "scheduler": _state(scheduler),
        "scaler": _state(scaler),
        "config": config,
        "rng": get_rng_state(),
        "extra": {key: _state(value) for key, value in extra.items()},
    }
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint is a normal file
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(
            tmp_name, path
        )  # atomic on POSIX and Windows: readers see old or new, never half
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(".step_*.pt.*.tmp"):  # left by a save killed mid-write
        stale.unlink(missing_ok=True)
    if keep_last is not None and keep_last > 0:
        for old in list_checkpoints(path.parent)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def _set_aside_advice(path: Path) -> str:
    """How to go on from the checkpoint before a corrupt one: rename the corrupt file so that it
    no longer counts as a step (``list_checkpoints`` skips it), then resume the run folder."""
    earlier = [p for p in list_checkpoints(path.parent) if p.name < path.name]
    if not earlier:
        return "No earlier checkpoint is in that folder; start the run again."
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return (
        f"To continue from the one before ({earlier[-1].name}), set the corrupt file aside and "
        f"resume the run again: mv {path} {path}.corrupt && python -m labkit.train --resume {run}"
    )


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint's payload with ``weights_only=True`` and check that it is one of ours.

    Raises:
        CheckpointError: missing, truncated, corrupt, or not a labkit checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint '{path}' does not exist. Check the path (ls {path.parent})."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err) or "Unsupported global" in str(err):  # a class or function
            raise CheckpointError(
                f"'{path}' holds Python objects that a safe load does not allow (torch.load with "
                f"weights_only=True refused it), so it is not a labkit checkpoint: labkit saves "
                f"tensors and plain values only. Never load a file you did not make yourself "
                f"with weights_only=False: unpickling runs whatever code the file carries."
            ) from None
        raise CheckpointError(
            f"Checkpoint '{path}' is truncated or corrupt ({path.stat().st_size} bytes). It "
            f"cannot be loaded. {_set_aside_advice(path)}"
        ) from None
    except Exception as err:  # any failure to parse an existing file: it is corrupt
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"Checkpoint '{path}' is truncated or corrupt ({path.stat().st_size} bytes; torch said: "
            f"{first_line[:200]}). It cannot be loaded. {_set_aside_advice(path)}"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "format_version" not in payload:
        raise CheckpointError(
            f"'{path}' is a torch file but not a labkit checkpoint (no 'model'/'format_version' "
            f"entries). Write checkpoints with labkit.utils.checkpoint.save_checkpoint."
        )
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint '{path}' has format {payload['format_version']}, newer than this labkit "
            f"reads ({FORMAT_VERSION}). Update the lab (git pull)."
        )
    return payload


def _load_model_state(path: Path, model: nn.Module, state: dict) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape mismatches (e.g. {wrong_shape[:2]})")
        raise CheckpointError(
            f"Checkpoint '{path}' does not match this model: {'; '.join(parts)}. It was made by a "
            f"different model config; resume with the config saved in that run folder."
        )
    model.load_state_dict(state)


def load_checkpoint(
    path: str | Path | Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    map_location: str | torch.device = "cpu",
    *,
    scheduler: Any = None,
) -> dict:
    """Restore model (and optimizer, scaler, scheduler if given) from a checkpoint.

    RNG states are returned, not restored: the caller decides when (see the trainer's resume).

    Args:
        path: a checkpoint file, or a :class:`Checkpoint` already read (not read again).

    Returns:
        The payload: ``step``, ``config``, ``rng``, ``extra`` and the raw states.

    Raises:
        CheckpointError: unreadable file, or states that do not fit the given objects.
    """
    if isinstance(path, Checkpoint):
        path, payload = path.path, path.payload
    else:
        path = Path(path)
        payload = read_checkpoint(path, map_location)
    _load_model_state(path, getattr(model, "module", model), payload["model"])
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if payload.get(name) is None:
            raise CheckpointError(f"Checkpoint '{path}' holds no {name} state to restore.")
        try:
            obj.load_state_dict(payload[name])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"Checkpoint '{path}': the {name} state does not fit ({err}). Was it made with a "
                f"different optimizer or parameter groups?"
            ) from None
    return payload


def restore_states(path: str | Path, parts: dict[str, tuple[Any, Any]]) -> None:
    """``obj.load_state_dict(state)`` for each ``name: (obj, state)``; misfits are ``CheckpointError``.

    A state that is missing or does not fit (other network widths, replay capacity, EMA of
    another model) means the checkpoint was made with another config: say so, instead of
    torch's size-mismatch trace.
    """
    for name, (obj, state) in parts.items():
        if state is None:
            raise CheckpointError(
                f"Checkpoint '{path}' holds no {name} state. It was made with a different "
                f"config; resume with the config saved in its run folder."
            )
        try:
            obj.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise CheckpointError(
                f"Checkpoint '{path}': the {name} state does not fit this run ({first_line}). "
                f"It was made with a different config; resume with the config saved in its run "
                f"folder (the CLI's --resume does that)."
            ) from None
