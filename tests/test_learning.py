"""``python -m labkit.learning`` and ``labkit.done --record`` on a copy of the shipped LEARNING.md.

The done checks never run here: recording takes their results, so the tests hand it fabricated
:class:`Check` objects (one test swaps a phase's ``DONE_CHECKS`` for a trivial check).
"""

import datetime
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import done, learning
from labkit.learning import Commit, LearningFile
from labkit.utils.checks import Check

REPO = Path(__file__).resolve().parents[1]
TODAY = datetime.date.today().isoformat()
ITEMS = ["(a) Overfit harness.", "(b) Short run reaches the target.", "(c) Loss stays finite."]
COMMIT = Commit("abc1234", "abc1234" + "0" * 33, False, "https://github.com/me/lab/commit/abc")


@pytest.fixture
def log(tmp_path) -> Path:
    copy = tmp_path / "LEARNING.md"
    copy.write_bytes((REPO / "LEARNING.md").read_bytes())
    return copy


def section(path: Path, title: str) -> list[str]:
    doc = LearningFile.read(path)
    return [doc.text(i) for i in doc.section(title) if doc.text(i).startswith("- ")]


def checks(*passed: bool) -> list[Check]:
    return [Check(f"check {i}", f"target {i}", f"measured {i}", ok) for i, ok in enumerate(passed)]


def record(log: Path, *passed: bool, **kwargs) -> list[str]:
    kwargs = {"items": ITEMS, "today": TODAY, "commit": COMMIT, **kwargs}
    return learning.record_checks("p10", checks(*passed), log, **kwargs)


def test_the_shipped_file_has_the_three_sections_and_no_bookkeeping_yet():
    for title in (learning.ACTIVE, learning.NOTES, learning.LINKS):
        assert section(REPO / "LEARNING.md", title) == []


def test_start_names_the_first_done_item_of_the_real_checks_and_a_second_start_adds_nothing(log):
    # The real P00 list: the first docstring line of each of its DONE_CHECKS.
    assert learning.done_items("p00")[0].startswith("(a) The overfit harness")
    assert learning.main(["start", "P00", "--file", str(log)]) == 0
    first = log.read_bytes()
    assert section(log, learning.ACTIVE) == [
        "- [ ] P00 PyTorch warm-up: MNIST, the anatomy of a training loop — next task: "
        + learning.done_items("p00")[0]
    ]
    assert learning.main(["start", "p00", "--file", str(log)]) == 0
    assert log.read_bytes() == first


def test_notes_are_dated_newest_first_once_each_and_the_learners_text_stays(log):
    learning.note("Overfit harness caught a label encoding bug.", log, today="2025-01-02")
    # The learner writes between two calls: a note of their own, a sentence under the heading.
    text = log.read_text().replace(
        "- 2025-01-02:",
        "My own words, not a bullet.\n\n- 2025-01-03: mine, by hand.\n- 2025-01-02:",
    )
    log.write_text(text)
    learning.note("GIoU   loss\nneeds xyxy boxes.", log, today="2025-01-04")  # one line, always
    learning.note("Overfit harness caught a label encoding bug.", log, today="2025-01-05")
    assert section(log, learning.NOTES) == [
        "- 2025-01-04: GIoU loss needs xyxy boxes.",
        "- 2025-01-03: mine, by hand.",
        "- 2025-01-02: Overfit harness caught a label encoding bug.",
    ]
    assert "My own words, not a bullet.\n" in log.read_text()
    assert log.read_text().replace("- 2025-01-04: GIoU loss needs xyxy boxes.\n", "") == text


def test_a_third_active_project_is_refused_with_the_reason_and_nothing_written(log, capsys):
    learning.start("p10", log, items=ITEMS)
    # A project of the learner's own counts too; a ticked one does not.
    text = log.read_text().replace(
        "— next task: (a) Overfit harness.\n",
        "— next task: (a) Overfit harness.\n- [x] P00 warm-up, done by hand\n"
        "- [ ] Read the FCOS paper — next task: section 3\n",
    )
    log.write_text(text)
    assert learning.main(["start", "P20", "--file", str(log)]) == 2
    message = capsys.readouterr().err
    assert "holds 2 unfinished projects already" in message and "at most 2" in message
    assert "P10 Tiny one-stage detector; Read the FCOS paper" in message
    assert "python -m labkit.done p10 --record" in message and "\n" not in message.strip()
    assert log.read_text() == text


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("## Notes (keep short)", "## My notes"),
        lambda t: t.replace("## Active Projects", "## Active projects"),
        lambda t: t.replace("## Links\n", ""),
        lambda t: t + "\n## Links\n\n- a second Links section\n",
    ],
    ids=["renamed", "case changed", "missing", "twice"],
)
def test_a_mangled_file_is_refused_by_every_command_and_left_as_it_was(log, capsys, mangle):
    text = mangle(log.read_text())
    log.write_text(text)
    for argv in (["start", "P10"], ["note", "something"], ["link", str(REPO / "README.md")]):
        assert learning.main([*argv, "--file", str(log)]) == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith("error: ") and "Nothing was written." in message
        assert "\n" not in message and "git show HEAD:LEARNING.md" in message
    with pytest.raises(learning.LearningFileError):
        record(log, True, True, True)
    assert log.read_text() == text


def test_a_missing_file_is_one_paragraph(tmp_path, capsys):
    assert learning.main(["note", "x", "--file", str(tmp_path / "nope.md")]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_record_notes_the_passing_figures_links_the_commit_and_moves_the_next_task(log):
    learning.start("p10", log, items=ITEMS)
    report = record(log, True, False, True)
    assert section(log, learning.NOTES) == [
        f"- {TODAY}: P10 (a) passed: check 0: measured 0 (target: target 0)",
        f"- {TODAY}: P10 (c) passed: check 2: measured 2 (target: target 2)",
    ]
    assert section(log, learning.LINKS) == [
        "- P10 done checks, 2/3 passed: commit [abc1234](https://github.com/me/lab/commit/abc); "
        "config [p10_detection](labkit/configs/p10_detection.yaml)"
    ]
    assert section(log, learning.ACTIVE) == [
        "- [ ] P10 Tiny one-stage detector — next task: (b) Short run reaches the target."
    ]
    assert "not recorded (failed): (b) Short run reaches the target." in report
    # The same results again (another day, too): nothing is added twice.
    before = log.read_bytes()
    assert record(log, True, False, True, today="2099-01-01")[-1].startswith("nothing new")
    assert log.read_bytes() == before


def test_start_after_a_record_skips_what_passed(log):
    record(log, True, False, False)
    learning.start("p10", log, items=ITEMS)
    assert section(log, learning.ACTIVE)[0].endswith("next task: (b) Short run reaches the target.")


def test_every_check_passing_moves_the_project_out_and_keeps_the_learners_lines(log):
    learning.start("p10", log, items=ITEMS)
    learning.note("mine", log, today="2025-01-01")
    text = log.read_text().replace(
        "next task: (a) Overfit harness.\n",
        "next task: (a) Overfit harness.\n- [ ] P30 CartPole — next task: my own words\n",
    )
    log.write_text(text)
    report = record(log, True, True, True)
    assert section(log, learning.ACTIVE) == ["- [ ] P30 CartPole — next task: my own words"]
    passed = [
        f"({x}) passed: check {i}: measured {i} (target: target {i})" for i, x in enumerate("abc")
    ]
    assert section(log, learning.NOTES) == [
        f"- {TODAY}: P10 done: all 3 checks passed.",
        *(f"- {TODAY}: P10 {figures}" for figures in passed),
        "- 2025-01-01: mine",
    ]
    assert "P10 moved out of Active Projects: every check passed" in report
    before = log.read_bytes()
    record(log, True, True, True)
    assert log.read_bytes() == before


def test_a_next_task_the_learner_rewrote_is_not_overwritten(log):
    learning.start("p10", log, items=ITEMS)
    log.write_text(log.read_text().replace("(a) Overfit harness.", "implement GIoU loss"))
    record(log, True, False, True)
    assert section(log, learning.ACTIVE)[0].endswith("next task: implement GIoU loss")


def test_run_folders_and_checkpoints_are_linked_relative_to_the_repository_and_marked_local(log):
    run = REPO / "runs" / "p10_detection" / "20250101-120000_run_s0"
    config = REPO / "labkit" / "configs" / "p10_voc.yaml"  # tracked: not marked local
    record(log, True, True, False, run_dirs=[run], checkpoints=[config])
    (line,) = section(log, learning.LINKS)
    assert "[runs/p10_detection/20250101-120000_run_s0](runs/p10_detection/" in line
    assert "_s0) (local, not in git)" in line
    assert line.endswith("[labkit/configs/p10_voc.yaml](labkit/configs/p10_voc.yaml)")


def test_link_adds_a_run_folder_once_with_its_index_line(log, tmp_path):
    run = tmp_path / "p00_mnist" / "20250101-120000_test_s0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("phase: p00\nexperiment: p00_mnist\nseed: 0\n")
    assert learning.main(["link", str(run), "--file", str(log)]) == 0
    assert learning.main(["link", str(run), "--file", str(log)]) == 0
    (line,) = section(log, learning.LINKS)
    assert f"]({learning.link_path(run)}) (local run, not in git)" in line
    learning.link(REPO / "README.md", log)
    assert section(log, learning.LINKS)[1] == "- [README.md](README.md)"


def test_the_commit_is_a_short_hash_with_a_github_url_when_the_remote_is_there():
    for remote in (
        "git@github.com:me/lab.git",
        "https://github.com/me/lab",
        "https://token@github.com/me/lab.git",
        "ssh://git@github.com/me/lab.git",
    ):
        assert learning.github_url(remote) == "https://github.com/me/lab"
    assert learning.github_url("https://gitlab.com/me/lab.git") is None
    commit = learning.current_commit()
    assert commit is None or (len(commit.short) == 7 and commit.full.startswith(commit.short))
    assert Commit("abc1234", "f", True, None).markdown() == "`abc1234` + uncommitted changes"


def test_done_record_runs_the_checks_then_records_them(log, monkeypatch, capsys):
    def trivial() -> Check:
        """(a) A trivial check."""
        return Check("trivial", "1 == 1", "1 == 1", True)

    monkeypatch.setattr(learning.get_phase("p00").done, "DONE_CHECKS", [trivial])
    learning.start("p00", log)
    assert done.main(["P00", "--record", "--file", str(log)]) == 0
    assert "P00 moved out of Active Projects" in capsys.readouterr().out
    assert section(log, learning.ACTIVE) == []
    assert section(log, learning.NOTES)[1] == (
        f"- {TODAY}: P00 (a) passed: trivial: 1 == 1 (target: 1 == 1)"
    )
    assert "config [p00_mnist](labkit/configs/p00_mnist.yaml)" in section(log, learning.LINKS)[0]
    # A renamed section: refused before any check runs.
    log.write_text(log.read_text().replace("## Links", "## See also"))
    monkeypatch.setattr(learning.get_phase("p00").done, "DONE_CHECKS", [])
    assert done.main(["p00", "--record", "--file", str(log)]) == 2
    assert "'## Links' is missing" in capsys.readouterr().err


def test_the_entry_point_runs_as_a_module(log):
    result = subprocess.run(
        [sys.executable, "-m", "labkit.learning", "note", "from a subprocess", "--file", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert section(log, learning.NOTES) == [f"- {TODAY}: from a subprocess"]


def test_a_rerun_whose_figures_differ_only_in_timings_is_no_new_note(log):
    def run(seconds: int, accuracy: str = "98.10%") -> None:
        measured = f"{accuracy} after 1500 steps ({seconds} s, 1 CPU threads); {seconds} CPU-s"
        result = [Check("held-out accuracy", ">= 97%", measured, True)]
        learning.record_checks("p00", result, log, items=["(c) Accuracy."], commit=COMMIT)

    run(28)
    run(31)
    assert len(section(log, learning.NOTES)) == 2  # "(c) passed" and "P00 done"
    run(30, accuracy="98.30%")  # a figure changed: that is news
    newest = section(log, learning.NOTES)[0]
    assert newest.endswith(
        "98.30% after 1500 steps (30 s, 1 CPU threads); 30 CPU-s (target: >= 97%)"
    )
