"""``python -m labkit.done PHASE``: check a phase's "done when" criteria and print what was measured.

Each check runs the real code on the CPU (small settings where the criterion allows) and
reports the measured figure next to its target. Exit code 0 when every check passes, 1 if not.
The checks are the ``DONE_CHECKS`` of the phase's ``done`` module (``labkit/<package>/done.py``,
see ``labkit.registry``).
"""

from __future__ import annotations

import argparse
import sys

from labkit.registry import PHASES, get_phase
from labkit.utils.checks import print_table, run_checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.done",
        description=__doc__.replace("``", "'"),
        epilog="phases:\n" + "\n".join(f"  {p.name}  {p.title}" for p in PHASES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("phase", choices=sorted(PHASES), help="which phase to check")
    args = parser.parse_args(argv)
    checks = run_checks(get_phase(args.phase).done.DONE_CHECKS)
    print_table(args.phase, checks)
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
