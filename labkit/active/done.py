"""P40's "done when" checks (``python -m labkit.done p40``), each reading one run of ``task.run``.

(a) an uncertainty selector's AUC beats random's by more than twice random's seed spread,
(b) every selection holds K distinct, never-labelled pool ids (and the edge cases behave).
The loop's resume (a killed comparison continues to the same result) is tested in
tests/test_active_loop.py.
"""

from __future__ import annotations

import functools
import time

import torch

from labkit.active.loop import LoopState
from labkit.active.selectors import RandomSelector, UncertaintySelector, check_selection
from labkit.active.task import run
from labkit.utils.checks import Check
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.runs import RunResult

# The comparison the checks run: p40_active's pool, budget and training, restricted to random
# against entropy (max over detections), 3 seeds, 2 acquisition rounds of 60 frames after 40
# initial ones (40 -> 160 labelled), 300 steps a round: 15 trainings (3 seeds x (3 + 2): each
# seed's round 0 is shared); measured 5.3 minutes on one CPU thread at load ~1 (315 s of CPU),
# 30 min on a busy machine.
DONE_OVERRIDES = [
    "device=cpu",
    "active.selectors=[random, entropy]",
    "active.seeds=[0, 1, 2]",
    "active.rounds=2",
]


def _p40_cfg(*overrides: str) -> dict:
    return apply_overrides(load_config("p40_active"), [*DONE_OVERRIDES, *overrides])


@functools.cache
def _comparison() -> tuple[RunResult, float]:
    """The comparison both checks read, run once: its result and its seconds."""
    start = time.perf_counter()
    result = run(_p40_cfg(), None, torch.device("cpu"), progress=False)
    return result, time.perf_counter() - start


def check_p40_beats_random() -> Check:
    """(a) An uncertainty selector's mAP@0.5 AUC beats random's by more than 2 std of random's."""
    result, seconds = _comparison()
    comparison = result.details
    print(comparison.table)
    best = max(comparison.tests, key=lambda name: comparison.tests[name]["gap"])
    test = comparison.tests[best]
    entry = comparison.summary["selectors"][best]
    saved = entry.get("labels_saved")
    measured = (
        f"{best}: AUC {entry['auc_mean']:.3f} vs random "
        f"{comparison.summary['selectors']['random']['auc_mean']:.3f}, gap {test['gap']:+.3f} vs "
        f"2σ_random {test['threshold']:.3f}; paired {test['paired_mean']:+.3f} ± "
        f"{test['paired_std']:.3f} ({test['wins']}/{len(test['paired'])} seeds won); labels saved "
        f"to reach random's final mAP: {'none' if saved is None else f'{saved:.0f}'} "
        f"({seconds:.0f} s, {torch.get_num_threads()} CPU threads)"
    )
    return Check(
        "uncertainty beats random",
        "AUC gap > 2 × std(random AUC)",
        measured,
        any(t["passed"] for t in comparison.tests.values()),
        seconds,
    )


def check_p40_selection_invariants() -> Check:
    """(b) Every selection holds K distinct, never-labelled pool ids (the comparison and edge cases)."""
    start = time.perf_counter()
    result, _ = _comparison()
    problems, selections = [], 0
    pool_size = len(result.setup.pool)
    for (name, seed), state in result.details.states.items():
        labelled = _initial(state)
        for entry in state.history:
            if "chosen" not in entry:
                continue
            pool_ids = [i for i in range(pool_size) if i not in set(labelled)]
            found = check_selection(entry["chosen"], pool_ids, labelled, len(entry["chosen"]))
            if len(entry["chosen"]) != result.details.states[(name, seed)].settings["active"]["k"]:
                found.append("not K ids")
            problems += [f"{name} s{seed} round {entry['round']}: {p}" for p in found]
            labelled += entry["chosen"]
            selections += 1
    # Edge cases on hand-made scores: k > pool, k = 0, ties broken by the smaller id.
    g = torch.Generator().manual_seed(0)
    ids, tied = [7, 3, 9, 1], torch.tensor([0.5, 0.9, 0.5, 0.9])
    cases = {
        "ties": UncertaintySelector().select(tied, ids, 3, g) == [1, 3, 7],
        "k > pool": sorted(RandomSelector().select(None, ids, 10, g)) == [1, 3, 7, 9],
        "k = 0": UncertaintySelector().select(tied, ids, 0, g) == [],
    }
    problems += [f"edge case {name}" for name, ok in cases.items() if not ok]
    measured = (
        f"{selections} selections of the comparison: K distinct unlabelled pool ids each; edge "
        f"cases {', '.join(cases)}: " + ("ok" if not problems else "; ".join(problems[:3]))
    )
    return Check(
        "selection invariants",
        "K distinct, never labelled",
        measured,
        not problems,
        time.perf_counter() - start,
    )


def _initial(state: LoopState) -> list[int]:
    chosen = [i for entry in state.history for i in entry.get("chosen", [])]
    return [i for i in state.labelled if i not in set(chosen)]


DONE_CHECKS = [check_p40_beats_random, check_p40_selection_invariants]
