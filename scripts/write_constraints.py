"""Write constraints.txt: the versions of this venv's packages, which `make setup` installs within.

Run it after an upgrade that passed `make test` (``.venv/bin/python scripts/write_constraints.py``).
torch, torchvision and everything they pull in are left out: scripts/choose_torch.py picks those
for the machine's GPU, and their versions differ between the CPU and CUDA wheel indexes.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

HEADER = """\
# The versions this lab was last tested with (make setup installs within them: pip -c).
# torch, torchvision and what they pull in are left to scripts/choose_torch.py (the wheel index
# depends on the GPU). Regenerate after an upgrade that passed `make test`:
#   .venv/bin/python scripts/write_constraints.py
"""


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def torch_stack() -> set[str]:
    """torch, torchvision and every package they require, transitively."""
    found, todo = set(), ["torch", "torchvision"]
    while todo:
        name = normal(todo.pop())
        if name in found:
            continue
        found.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [re.split(r"[ ;<>=!~\[(]", r)[0] for r in requires if "extra ==" not in r]
    return found


def main() -> int:
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    skip = torch_stack() | {"labkit"}
    pins = [
        line
        for line in frozen
        if re.fullmatch(r"[A-Za-z0-9_.-]+==\S+", line)
        and normal(line.split("==")[0]) not in skip
        and not normal(line).startswith(("nvidia-", "cuda-", "triton"))
    ]
    path = Path(__file__).resolve().parents[1] / "constraints.txt"
    path.write_text(HEADER + "\n".join(sorted(pins, key=str.lower)) + "\n")
    print(f"{path}: {len(pins)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
