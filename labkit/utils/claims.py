"""Claims a lesson makes, checked by the run that prints them.

Every quantitative sentence in a notebook ("EMA beats raw weights", "about 40 ms a step") sits
above a code cell that measures it and calls :func:`claim`. The printed line is what
``make nbfull`` greps for: a line starting ``CLAIM FAILED`` fails the build.

Smoke runs (``LABKIT_SMOKE=1``, tiny settings) cannot reproduce most claims; pass
``smoke=True`` there and the line reads ``· (smoke: not checked) ...`` instead, so the smoke path
stays green while still showing the measured value::

    claim("EMA weights beat raw weights", fid_ema < fid_raw, f"{fid_ema:.0f} vs {fid_raw:.0f}",
          smoke=smoke)
"""

from __future__ import annotations

PASSED = "✓"
FAILED = "CLAIM FAILED"
NOT_CHECKED = "· (smoke: not checked)"


def claim(text: str, passed: bool, value: str, *, smoke: bool = False) -> bool:
    """Print one checked claim and return whether it held.

    Args:
        text: the claim as the lesson states it, e.g. ``"guidance raises label accuracy"``.
        passed: whether the measured value supports it.
        value: the measured value(s), formatted for a reader, e.g. ``"91 % vs 62 %"``.
        smoke: the run uses tiny smoke settings on which the claim need not hold; a failure is
            then reported as "not checked" instead of ``CLAIM FAILED`` (a pass still prints ✓).

    Returns:
        ``passed`` as a bool, so a cell can collect the results.
    """
    passed = bool(passed)
    if passed:
        print(f"{PASSED} {text}: {value}", flush=True)
    elif smoke:
        print(f"{NOT_CHECKED} {text}: {value}", flush=True)
    else:
        print(f"{FAILED}: {text}: {value}", flush=True)
    return passed
