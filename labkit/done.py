"""``python -m labkit.done PHASE``: check a phase's "done when" criteria and print what was measured.

Each check runs the real code on the CPU (small settings where the criterion allows) and
reports the measured figure next to its target. Exit code 0 when every check passes, 1 if not.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    target: str
    measured: str
    passed: bool
    seconds: float = 0.0


# phase -> module whose DONE_CHECKS lists the check functions (each returns a Check)
PHASES: dict[str, str] = {
    "p00": "labkit.tasks.classification",
    "p10": "labkit.tasks.detection",
    "p30": "labkit.tasks.rl",
}


def print_table(phase: str, checks: list[Check]) -> None:
    rows = [("check", "target", "measured", "result")]
    rows += [(c.name, c.target, c.measured, "PASS" if c.passed else "FAIL") for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"\n{phase}: {sum(c.passed for c in checks)}/{len(checks)} checks passed")
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.done", description=__doc__)
    parser.add_argument("phase", choices=sorted(PHASES), help="which phase to check")
    args = parser.parse_args(argv)
    checks = []
    module = importlib.import_module(PHASES[args.phase])
    for check in module.DONE_CHECKS:
        print(f"running: {check.__doc__.strip().splitlines()[0]}", flush=True)
        checks.append(check())
    print_table(args.phase, checks)
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
