"""Label-efficiency curves: mAP@0.5 against labelled frames, and whether a selector beat random.

For each selector, every seed gives one curve ``m_s(n)`` (the held-out metric after training on
n labelled frames, n = n_0, n_0 + K, ...). From those:

* the **mean curve** ± its seed-to-seed standard deviation (sample std, ``ddof = 1``);
* the **area under the curve**, normalised by the budget span, ``AUC_s = (1 / (n_R - n_0))
  ∫ m_s(n) dn`` (trapezoids): the mean metric over the labelling budget, in the metric's units.
  One number per seed, so its spread over seeds is measurable;
* **labels to reach random's final value**: the first n at which a selector's mean curve
  reaches random's mean at the full budget (linear interpolation between rounds); the labels
  saved are ``n_R - n``.

**The test** (:func:`gap_test`): a selector beats random when its mean AUC exceeds random's by
more than ``2 ×`` the standard deviation of random's AUC over seeds — the gap must be larger than
the noise of the baseline itself. The paired differences (same seed = same initial set and
training seeds) are reported beside it: they remove the part of the noise both share.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "trapezoid_auc",
    "summarise",
    "labels_to_reach",
    "gap_test",
    "format_table",
    "plot_curves",
]


def trapezoid_auc(labelled: list[float], values: list[float]) -> float:
    """Area under ``values`` over ``labelled`` (trapezoids) divided by the span: a mean value."""
    if len(labelled) != len(values) or not labelled:
        raise ValueError(f"need matching, non-empty lists, got {len(labelled)} and {len(values)}")
    if len(labelled) == 1:
        return float(values[0])
    area = sum(
        (labelled[i + 1] - labelled[i]) * (values[i] + values[i + 1]) / 2
        for i in range(len(labelled) - 1)
    )
    return area / (labelled[-1] - labelled[0])


def _mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def labels_to_reach(labelled: list[float], mean: list[float], target: float) -> float | None:
    """First n at which the curve ``(labelled, mean)`` reaches ``target`` (interpolated), or None."""
    for i, value in enumerate(mean):
        if value >= target:
            if i == 0:
                return float(labelled[0])
            lo, hi = mean[i - 1], value
            return labelled[i - 1] + (target - lo) / (hi - lo) * (labelled[i] - labelled[i - 1])
    return None


# How a curve's metric key reads on an axis (the key itself: what metrics.jsonl and TensorBoard use)
METRIC_LABELS = {"eval/map50": "held-out mAP@0.5", "eval/map50_95": "held-out mAP@0.5:0.95"}


def summarise(histories: dict[tuple[str, int], list[dict]], metric: str = "eval/map50") -> dict:
    """Per selector: labelled counts, per-seed curves, mean ± std, AUCs, final value, labels saved.

    Args:
        histories: ``{(selector, seed): loop history}`` (``LoopState.history``: one dict per
            round with ``"labelled"`` and the metric), complete loops only.
    """
    selectors = list(dict.fromkeys(name for name, _ in histories))
    out: dict[str, Any] = {"metric": metric, "selectors": {}}
    for name in selectors:
        runs = {seed: h for (sel, seed), h in sorted(histories.items()) if sel == name}
        labelled = [row["labelled"] for row in next(iter(runs.values()))]
        for seed, history in runs.items():
            if [row["labelled"] for row in history] != labelled:
                raise ValueError(f"{name} seed {seed} has other labelled counts than seed 0's")
        curves = {seed: [row[metric] for row in h] for seed, h in runs.items()}
        per_round = list(zip(*curves.values(), strict=True))
        stats = [_mean_std(list(values)) for values in per_round]
        aucs = {seed: trapezoid_auc(labelled, c) for seed, c in curves.items()}
        auc_mean, auc_std = _mean_std(list(aucs.values()))
        out["selectors"][name] = {
            "labelled": labelled,
            "curves": curves,
            "mean": [m for m, _ in stats],
            "std": [s for _, s in stats],
            "auc": aucs,
            "auc_mean": auc_mean,
            "auc_std": auc_std,
            "final_mean": stats[-1][0],
            "final_std": stats[-1][1],
        }
    if "random" in out["selectors"]:
        target = out["selectors"]["random"]["final_mean"]
        budget = out["selectors"]["random"]["labelled"][-1]
        for entry in out["selectors"].values():
            reach = labels_to_reach(entry["labelled"], entry["mean"], target)
            entry["labels_to_random_final"] = reach
            entry["labels_saved"] = None if reach is None else budget - reach
    return out


def gap_test(summary: dict, baseline: str = "random", factor: float = 2.0) -> dict[str, dict]:
    """For each selector but ``baseline``: AUC gap, random's AUC std, paired diffs, and the verdict.

    ``passed``: ``auc_mean - baseline auc_mean > factor * baseline auc_std`` (see the module
    docstring). Seeds are paired by their number.
    """
    base = summary["selectors"][baseline]
    results = {}
    for name, entry in summary["selectors"].items():
        if name == baseline:
            continue
        gap = entry["auc_mean"] - base["auc_mean"]
        paired = [entry["auc"][s] - base["auc"][s] for s in entry["auc"] if s in base["auc"]]
        paired_mean, paired_std = _mean_std(paired) if paired else (math.nan, math.nan)
        results[name] = {
            "gap": gap,
            "baseline_std": base["auc_std"],
            "threshold": factor * base["auc_std"],
            "passed": gap > factor * base["auc_std"],
            "paired": paired,
            "paired_mean": paired_mean,
            "paired_std": paired_std,
            "wins": sum(d > 0 for d in paired),
        }
    return results


def format_table(summary: dict, tests: dict[str, dict] | None = None) -> str:
    """The comparison as a text table: AUC ± std, final value ± std, labels saved, the test."""
    tests = tests or {}
    header = (
        "selector",
        "AUC mean ± std",
        "final ± std",
        "n to reach random",
        "gap vs 2σ_rand",
        "seeds won",
    )
    rows = [header]
    for name, e in summary["selectors"].items():
        reach = e.get("labels_to_random_final")
        test = tests.get(name)
        rows.append(
            (
                name,
                f"{e['auc_mean']:.3f} ± {e['auc_std']:.3f}",
                f"{e['final_mean']:.3f} ± {e['final_std']:.3f}",
                (
                    "-"
                    if name == "random"
                    else (
                        "not reached"
                        if reach is None
                        else f"{reach:.0f} (saves {e['labels_saved']:.0f})"
                    )
                ),
                (
                    "-"
                    if test is None
                    else f"{test['gap']:+.3f} vs {test['threshold']:.3f} "
                    + ("PASS" if test["passed"] else "fail")
                ),
                "-" if test is None else f"{test['wins']}/{len(test['paired'])}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"{summary['metric']} vs labelled frames\n" + "\n".join(lines)


def plot_curves(summary: dict, ax=None, title: str | None = None):
    """Mean curve ± std band per selector (matplotlib); returns the axes."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for name, e in summary["selectors"].items():
        mean, std = torch.tensor(e["mean"]), torch.tensor(e["std"])
        style = dict(color="black", linestyle="--") if name == "random" else {}
        line = ax.plot(
            e["labelled"], mean, marker="o", label=f"{name} (AUC {e['auc_mean']:.3f})", **style
        )
        ax.fill_between(
            e["labelled"], mean - std, mean + std, alpha=0.15, color=line[0].get_color()
        )
    metric = summary["metric"]
    ax.set(xlabel="labelled frames", ylabel=METRIC_LABELS.get(metric, metric.replace("eval/", "")))
    ax.set_title(
        title or f"label efficiency: mean ± std over {len(e['curves'])} seeds", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return ax
