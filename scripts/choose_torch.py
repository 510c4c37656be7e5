"""Choose the torch wheels for this machine's NVIDIA GPU (run by scripts/setup_venv.sh).

Why: since torch 2.8 the default PyPI wheels carry no kernels for compute capability below 7.0
(Pascal, e.g. the GTX 1060 = 6.1). PyTorch's CUDA 12.6 wheels (torch < 2.15) still do. Every
other machine (newer GPUs, or no GPU) takes the default wheels. Standard library only: it runs
before the venv has anything installed. ``python3 scripts/choose_torch.py`` prints the pip
arguments; ``--explain`` prints the reason too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

TORCH, TORCHVISION = "2.14.1", "0.29.1"  # the lab's pinned pair
PYTORCH_INDEX = "https://download.pytorch.org/whl/{}"
OLDEST_DEFAULT_CAPABILITY = (7, 0)  # the default wheels dropped sm_50/sm_60/sm_61 in torch 2.8


@dataclass(frozen=True)
class WheelChoice:
    pip_args: list[str]
    reason: str


def parse_compute_caps(nvidia_smi_output: str) -> list[tuple[int, int]]:
    """``"6.1\\n8.6\\n"`` (``nvidia-smi --query-gpu=compute_cap --format=csv,noheader``) → [(6, 1), (8, 6)]."""
    caps = []
    for line in nvidia_smi_output.splitlines():
        line = line.strip()
        if not line:
            continue
        major, _, minor = line.partition(".")
        if major.isdigit() and minor.isdigit():
            caps.append((int(major), int(minor)))
    return caps


def choose_torch(caps: list[tuple[int, int]], override: str | None = None) -> WheelChoice:
    """Pip arguments that install torch + torchvision for GPUs of compute capability ``caps``.

    Args:
        caps: one entry per visible NVIDIA GPU; empty when there is none.
        override: ``TORCH_CUDA`` from the environment: ``default``, ``cpu`` or a CUDA tag such
            as ``cu126``; it wins over the detection.
    """
    pinned = [f"torch=={TORCH}", f"torchvision=={TORCHVISION}"]
    if override and override != "default":
        if override == "cu126":
            return WheelChoice(
                ["--index-url", PYTORCH_INDEX.format("cu126"), "torch<2.15", "torchvision<0.30"],
                "TORCH_CUDA=cu126: CUDA 12.6 wheels (torch < 2.15), kernels for 5.0-9.0",
            )
        return WheelChoice(
            ["--index-url", PYTORCH_INDEX.format(override), *pinned],
            f"TORCH_CUDA={override}: wheels from PyTorch's {override} index",
        )
    if override == "default":
        return WheelChoice(pinned, "TORCH_CUDA=default: the default PyPI wheels")
    if not caps:
        return WheelChoice(
            pinned, "no NVIDIA GPU found: the default PyPI wheels (they run on the CPU)"
        )
    oldest = min(caps)
    if oldest < OLDEST_DEFAULT_CAPABILITY:
        return WheelChoice(
            ["--index-url", PYTORCH_INDEX.format("cu126"), "torch<2.15", "torchvision<0.30"],
            f"GPU with compute capability {oldest[0]}.{oldest[1]} (< 7.0, e.g. a Pascal GTX 10xx): "
            f"the default wheels have no kernels for it since torch 2.8, so the CUDA 12.6 wheels "
            f"(torch < 2.15) are installed",
        )
    return WheelChoice(
        pinned, f"GPU with compute capability {oldest[0]}.{oldest[1]}: the default PyPI wheels"
    )


def detect_compute_caps() -> list[tuple[int, int]]:
    """Ask ``nvidia-smi`` (no torch needed); an empty list when there is no NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_compute_caps(out)


def main(argv: list[str]) -> int:
    choice = choose_torch(detect_compute_caps(), os.environ.get("TORCH_CUDA"))
    if "--explain" in argv:
        print(choice.reason)
    else:
        print(" ".join(choice.pip_args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
