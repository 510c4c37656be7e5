"""``make bench``'s report on tiny sizes: every ratio positive and finite, the JSON complete.

Times are not asserted (this machine is shared); the full-size targets are ``make bench``'s job.
"""

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts at the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks import report as bench  # noqa: E402

RESULT_NAMES = {
    "trainer",
    "nms",
    "batched_nms",
    "box_iou",
    "loader_p00",
    "loader_p10",
    "rl_dqn",
    "ddim",
    "splatting",
}
MACHINE_KEYS = {"cpu", "cores", "load_average", "load_average_after", "torch", "torch_threads"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[dict, Path, str]:
    out = tmp_path_factory.mktemp("bench")
    code = bench.main(["--size", "tiny", "--out", str(out)])
    (path,) = out.glob("*.json")
    return json.loads(path.read_text()), path, code


def test_every_ratio_is_a_positive_finite_number(tiny):
    report, _, code = tiny
    assert set(report["results"]) == RESULT_NAMES
    errors = {k: r["error"] for k, r in report["results"].items() if "error" in r}
    assert not errors and code == 0
    for name, result in report["results"].items():
        if "skipped" in result:  # only a phase package missing from the checkout may skip
            assert "not in this checkout" in result["skipped"]
            continue
        assert math.isfinite(result["ratio"]) and result["ratio"] > 0, name


def test_the_json_describes_the_machine_and_the_run(tiny):
    report, path, _ = tiny
    assert path.stem[:8].isdigit() and path.stem[8] == "-"  # runs/bench/<YYYYmmdd-HHMMSS>.json
    assert {"time", "size", "git_commit", "machine", "results", "seconds"} <= set(report)
    assert MACHINE_KEYS <= set(report["machine"]) and report["size"] == "tiny"
    assert len(report["machine"]["load_average"]) == 3
    for result in report["results"].values():
        assert "wall_s" in result
        assert "skipped" in result or {"ratio", "target"} <= set(result)


def test_the_checks_inside_hold(tiny):
    """What each benchmark checks besides time: same weights, same boxes, same pixels."""
    results = tiny[0]["results"]
    assert results["trainer"]["identical_weights"]
    assert all(results[name]["agrees"] for name in ("nms", "batched_nms", "box_iou"))
    if "max_abs_diff" in results["splatting"]:
        assert results["splatting"]["max_abs_diff"] < 1e-4
    assert results["loader_p00"]["bottleneck"] in ("input", "model")


def test_a_broken_benchmark_is_reported_and_the_rest_still_run(monkeypatch):
    def broken(knobs):
        raise RuntimeError("boom")

    monkeypatch.setitem(bench.BENCHMARKS, "ddim", broken)
    report = bench.run_report("tiny", only=["ddim", "splatting"])
    assert report["results"]["ddim"]["error"] == "RuntimeError: boom"
    assert "ratio" in report["results"]["splatting"] or "skipped" in report["results"]["splatting"]
    assert "ERROR: RuntimeError: boom" in bench.format_report(report)


def test_a_missing_phase_package_is_skipped():
    with pytest.raises(bench.Skipped, match="labkit.no_such_phase is not in this checkout"):
        bench.require_package("labkit.no_such_phase")
