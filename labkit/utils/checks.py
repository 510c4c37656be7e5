""" "Done when" checks: each phase's task module lists functions that return a :class:`Check`.

``python -m labkit.done PHASE`` runs them and prints the table; tests call single checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Check:
    """One criterion: what was asked (``target``), what the run measured, and whether it passed."""

    name: str
    target: str
    measured: str
    passed: bool
    seconds: float = 0.0


def run_checks(checks: list[Callable[[], Check]]) -> list[Check]:
    """Run each check function (announcing it by its docstring's first line) and time it."""
    results = []
    for check in checks:
        print(f"running: {(check.__doc__ or check.__name__).strip().splitlines()[0]}", flush=True)
        start = time.perf_counter()
        result = check()
        result.seconds = result.seconds or time.perf_counter() - start
        results.append(result)
    return results


def print_table(phase: str, checks: list[Check]) -> None:
    """The checks as an aligned table, headed by how many passed."""
    rows = [("check", "target", "measured", "result")]
    rows += [(c.name, c.target, c.measured, "PASS" if c.passed else "FAIL") for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"\n{phase}: {sum(c.passed for c in checks)}/{len(checks)} checks passed")
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
