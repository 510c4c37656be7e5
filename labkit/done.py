"""``python -m labkit.done PHASE``: check a phase's "done when" criteria and print what was measured.

Each check runs the real code on the CPU (small settings where the criterion allows) and
reports the measured figure next to its target. Exit code 0 when every check passes, 1 if not.
The checks are the ``DONE_CHECKS`` of the phase's ``done`` module (``labkit/<package>/done.py``,
see ``labkit.registry``). With ``--record``, the figures of the passing checks go into
LEARNING.md as dated notes, with links (commit, configs), and the phase leaves Active Projects
once every check passes (``labkit.learning``); exit code 2 when LEARNING.md's sections were
renamed (checked before any check runs).
"""

from __future__ import annotations

import argparse
import sys

from labkit import learning
from labkit.registry import PHASES, get_phase
from labkit.utils.checks import print_table, run_checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.done",
        description=__doc__.replace("``", "'"),
        epilog="phases:\n" + "\n".join(f"  {p.name}  {p.title}" for p in PHASES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "phase", type=str.lower, choices=sorted(PHASES), help="which phase to check"
    )
    parser.add_argument("--record", action="store_true", help="write the results into LEARNING.md")
    parser.add_argument(
        "--file",
        default=str(learning.LEARNING_MD),
        help="LEARNING.md to record in (default: the repository's)",
    )
    args = parser.parse_args(argv)
    try:
        if args.record:  # a renamed section is refused now, not after minutes of checks
            learning.LearningFile.read(args.file)
        checks = run_checks(get_phase(args.phase).done.DONE_CHECKS)
        print_table(args.phase, checks)
        if args.record:
            print("\n".join(["", *learning.record_checks(args.phase, checks, args.file)]))
    except learning.LearningFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
