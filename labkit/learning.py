"""``python -m labkit.learning``: the lab keeps LEARNING.md's bookkeeping, when asked to.

    python -m labkit.learning start P10            # P10 into "Active Projects", with its next task
    python -m labkit.learning note "..."           # a dated one-line bullet on top of "Notes"
    python -m labkit.learning link RUN_OR_FILE     # a run folder or checkpoint into "Links"
    python -m labkit.done p10 --record             # the checks' figures as notes, links, done -> out

LEARNING.md has three sections the lab writes into, found by their headings, exactly:
``## Active Projects`` (two unfinished items at most, ``- [ ] P10 <title> — next task: ...``),
``## Notes (keep short)`` (``- YYYY-MM-DD: ...``, newest first) and ``## Links``. Everything
else in the file is the learner's. Every edit inserts, rewrites or removes one of the lab's own
lines, and only when asked: a line that is already there is not added again (running a command
twice adds nothing twice), and a line the learner wrote is never changed. When a heading was
renamed, is missing or appears twice, nothing is written (:class:`LearningFileError`, exit 2).

A phase's "done when" items are the first lines of its ``DONE_CHECKS`` docstrings
(``labkit/<package>/done.py``, e.g. "(a) The overfit harness: ..."): one list the checks
themselves define, so it cannot drift from what ``labkit.done`` measures. An item counts as
checked once a note written by ``python -m labkit.done PHASE --record`` says it passed
("P10 (a) passed: ..."); ``start`` names the first item without such a note as the next task.
Links are relative to the repository root (where LEARNING.md is); commits are short hashes, with
a URL when a GitHub remote is known; paths git does not track (``runs/``) are marked local.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit.registry import PHASES, get_phase
from labkit.utils.checks import Check

REPO = Path(__file__).resolve().parents[1]
LEARNING_MD = REPO / "LEARNING.md"
ACTIVE, NOTES, LINKS = "Active Projects", "Notes (keep short)", "Links"
MAX_ACTIVE = 2  # the spec's limit: few enough that each project finishes

_HEADING = re.compile(r"^(#{1,2})\s+(.*?)\s*#*\s*$")
_NOTE = re.compile(r"^- (\d{4}-\d{2}-\d{2}): (.*)$")
_ITEM = re.compile(r"^- \[([ xX])\] (.*)$")
_PROJECT = re.compile(r"^(P\d\d)\b.*?(?: — next task: (.*))?$")
_LABEL = re.compile(r"^\((\w)\)")
_SECONDS = re.compile(r"\d[\d,.]*\s?(?:CPU-)?s\b")


class LearningFileError(Exception):
    """LEARNING.md cannot be written as asked; the message is one paragraph, nothing was written."""


# ---------------------------------------------------------------------------------------------
# The file: lines (with their endings) and the three sections


@dataclass
class LearningFile:
    path: Path
    lines: list[str]  # each with its line ending, as read

    @classmethod
    def read(cls, path: str | Path) -> LearningFile:
        """The file at ``path``, checked: each of the three headings present exactly once."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except (OSError, UnicodeDecodeError) as err:
            raise LearningFileError(
                f"{path} cannot be read ({err}); the lab writes into an existing LEARNING.md "
                f"only: restore it with `git checkout -- LEARNING.md`. Nothing was written."
            ) from None
        doc = cls(path, lines)
        found = [title for _, _, title in doc._headings() if title]
        for title in (ACTIVE, NOTES, LINKS):
            count = found.count(title)
            if count != 1:
                problem = "is missing (renamed?)" if count == 0 else f"appears {count} times"
                raise LearningFileError(
                    f"{path}: the section '## {title}' {problem}; its sections are now "
                    f"{', '.join(repr(t) for t in found) or 'none'}. The lab writes only into "
                    f"'## {ACTIVE}', '## {NOTES}' and '## {LINKS}', found by those exact "
                    f"headings, so that it never writes into text of yours: rename the heading "
                    f"back (the shipped file: `git show HEAD:LEARNING.md`) and run the command "
                    f"again. Nothing was written."
                )
        return doc

    def _headings(self) -> list[tuple[int, int, str]]:
        """``(line index, level, title)`` of every level-1/2 heading outside code fences."""
        headings, fenced = [], False
        for i, line in enumerate(self.lines):
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif not fenced and (match := _HEADING.match(line.rstrip("\r\n"))):
                headings.append((i, len(match[1]), match[2]))
        return headings

    def section(self, title: str) -> range:
        """Indices of the lines between ``## title`` and the next heading (or the end)."""
        heads = self._headings()
        start = next(i for i, level, t in heads if level == 2 and t == title) + 1
        end = next((i for i, _, _ in heads if i >= start), len(self.lines))
        return range(start, end)

    def text(self, i: int) -> str:
        return self.lines[i].rstrip("\r\n")

    def insert(self, at: int, new: list[str]) -> None:
        """``new`` lines (no endings) before line ``at``, in the file's own line ending; a blank
        line keeps them apart from a heading or from prose that does not end a list."""
        newline = "\r\n" if self.lines and self.lines[0].endswith("\r\n") else "\n"
        if at > 0 and not self.lines[at - 1].endswith("\n"):
            self.lines[at - 1] += newline  # the last line of a file without a final newline
        before = self.text(at - 1) if at > 0 else ""
        if before.strip() and not before.startswith(("- ", "  ")):
            new = ["", *new]
        if at < len(self.lines) and self.text(at).startswith("#"):
            new = [*new, ""]
        self.lines[at:at] = [line + newline for line in new]

    def end_of_content(self, title: str) -> int:
        """Where a section's last non-blank line ends (its heading's, when it is empty)."""
        section = self.section(title)
        filled = [i for i in section if self.text(i).strip()]
        return filled[-1] + 1 if filled else section.start

    def write(self) -> None:
        """Replace the file in one step (a temporary file beside it, then a rename)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(self.lines), encoding="utf-8")
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------------
# Notes, links, projects: one edit each


def note_bodies(doc: LearningFile) -> list[str]:
    """The text after ``- YYYY-MM-DD: `` of every dated note."""
    lines = (doc.text(i) for i in doc.section(NOTES))
    return [match[2] for line in lines if (match := _NOTE.match(line))]


def add_notes(
    doc: LearningFile, bodies: Sequence[str], today: str, key: Callable[[str], str] = str
) -> list[str]:
    """Dated bullets on top of Notes (newest first), in the given order; a body already noted
    (on any day; compared by ``key``) is left out. Returns the bodies added."""
    seen = {key(body) for body in note_bodies(doc)}
    new = [body for body in dict.fromkeys(bodies) if key(body) not in seen]
    if new:
        section = doc.section(NOTES)
        first = next((i for i in section if doc.text(i).startswith("- ")), None)
        at = doc.end_of_content(NOTES) if first is None else first
        doc.insert(at, [f"- {today}: {body}" for body in new])
    return new


def add_link(doc: LearningFile, line: str, target: str | None = None) -> bool:
    """``line`` at the end of the Links list, unless it (or a link to ``target``) is there."""
    lines = [doc.text(i) for i in doc.section(LINKS)]
    if line in lines or (target and any(f"]({target})" in existing for existing in lines)):
        return False
    doc.insert(doc.end_of_content(LINKS), [line])
    return True


def projects(doc: LearningFile) -> list[tuple[int, bool, str | None, str | None]]:
    """``(line index, finished?, phase name or None, next task or None)`` of each checkbox item
    in Active Projects; phase and next task are read from the lab's form of the line."""
    items = []
    for i in doc.section(ACTIVE):
        if match := _ITEM.match(doc.text(i)):
            project = _PROJECT.match(match[2])
            phase, task = (project[1].lower(), project[2]) if project else (None, None)
            items.append((i, match[1] != " ", phase, task))
    return items


def without_timings(figures: str) -> str:
    """``figures`` with its durations ("136 s", "51 CPU-s") masked: the checks' figures are
    seeded and repeat exactly, their timings do not, and a rerun is no new finding."""
    return _SECONDS.sub("… s", figures)


def project_line(phase: str, task: str) -> str:
    return f"- [ ] {phase.upper()} {get_phase(phase).title} — next task: {task}"


def done_items(phase: str) -> list[str]:
    """The phase's "done when" items: the first docstring line of each of its ``DONE_CHECKS``."""
    return [
        (check.__doc__ or check.__name__).strip().splitlines()[0]
        for check in get_phase(phase).done.DONE_CHECKS
    ]


def item_label(item: str, index: int) -> str:
    """``"(a)"``: the item's own letter, else its position's."""
    match = _LABEL.match(item)
    return f"({match[1] if match else chr(ord('a') + index)})"


def all_recorded(phase: str) -> str:
    return f"every done check is recorded as passing (`python -m labkit.done {phase} --record`)"


def next_task(doc: LearningFile, phase: str, items: Sequence[str]) -> str:
    """The first item no note records as passed."""
    passed = {b.split(" passed:")[0] for b in note_bodies(doc) if " passed:" in b}
    for index, item in enumerate(items):
        if f"{phase.upper()} {item_label(item, index)}" not in passed:
            return item
    return all_recorded(phase)


# ---------------------------------------------------------------------------------------------
# The commands


def start(phase: str, path: str | Path = LEARNING_MD, items: Sequence[str] | None = None) -> str:
    """Put ``phase`` into Active Projects with its next task; refuses a third unfinished item."""
    phase = phase.lower()
    doc = LearningFile.read(path)
    current = projects(doc)
    if any(name == phase for _, _, name, _ in current):
        return f"{phase.upper()} is in Active Projects already; {path} is unchanged."
    unfinished = [
        (doc.text(i)[6:].split(" — ")[0], name) for i, done, name, _ in current if not done
    ]
    if len(unfinished) >= MAX_ACTIVE:
        first = next((name for _, name in unfinished if name), "PHASE")
        raise LearningFileError(
            f"Active Projects holds {len(unfinished)} unfinished projects already "
            f"({'; '.join(text for text, _ in unfinished)}); the lab keeps at most {MAX_ACTIVE}, "
            f"so that each one finishes. Finish one (`python -m labkit.done {first} --record` moves it out once every check "
            f"passes) or tick or delete its line by hand, then start {phase.upper()} again. "
            f"Nothing was written."
        )
    task = next_task(doc, phase, done_items(phase) if items is None else items)
    at = doc.end_of_content(ACTIVE)
    if current:  # after the last item and the indented lines that belong to it
        at = current[-1][0] + 1
        while at < len(doc.lines) and doc.text(at).startswith((" ", "\t")):
            at += 1
    doc.insert(at, [project_line(phase, task)])
    doc.write()
    return f"{phase.upper()} is an active project; next task: {task}"


def note(text: str, path: str | Path = LEARNING_MD, today: str | None = None) -> str:
    """A dated one-line bullet on top of Notes (not again if the same text is noted)."""
    text = " ".join(text.split())
    if not text:
        raise LearningFileError("A note needs some text: `python -m labkit.learning note '...'`.")
    doc = LearningFile.read(path)
    if not add_notes(doc, [text], today or datetime.date.today().isoformat()):
        return f"already noted; {path} is unchanged."
    doc.write()
    return f"noted in {path}."


def link_path(path: str | Path) -> str:
    """``path`` relative to the repository root (links in LEARNING.md resolve from there)."""
    return Path(os.path.relpath(Path(path).resolve(), REPO)).as_posix()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def tracked(path: str | Path) -> bool:
    """Whether git tracks ``path`` (a file, or any file in a folder) in this repository."""
    return bool((_git("ls-files", "--", link_path(path)) or "").strip())


def link(target: str | Path, path: str | Path = LEARNING_MD) -> str:
    """A run folder (its ``labkit.runs --markdown`` line) or a file (a checkpoint, a config)
    into Links; not again if something already links to it."""
    target = Path(target)
    if not target.exists():
        raise LearningFileError(f"{target} does not exist; nothing was written.")
    doc = LearningFile.read(path)
    rel = link_path(target)
    if (target / "config.yaml").is_file():
        from labkit.runs import markdown_lines, read_run  # reads checkpoints: imports torch

        line = markdown_lines([read_run(target)])[0]
    else:
        local = "" if tracked(target) else " (local file, not in git)"
        line = f"- [{rel}]({rel}){local}"
    if not add_link(doc, line, rel):
        return f"{rel} is linked already; {path} is unchanged."
    doc.write()
    return f"linked {rel} in {path}."


@dataclass(frozen=True)
class Commit:
    short: str
    full: str
    dirty: bool  # uncommitted changes to tracked files (LEARNING.md itself not counted)
    url: str | None  # on GitHub, when a remote there is known

    def markdown(self) -> str:
        text = f"[{self.short}]({self.url})" if self.url else f"`{self.short}`"
        return text + (" + uncommitted changes" if self.dirty else "")


def github_url(remote: str) -> str | None:
    """``https://github.com/OWNER/REPO`` from a GitHub remote (https or ssh), else None."""
    match = re.match(
        r"^(?:https?://(?:[^@/]+@)?|ssh://git@|git@)github\.com[:/]"
        r"([\w.-]+)/([\w.-]+?)(?:\.git)?/?$",
        remote.strip(),
    )
    return f"https://github.com/{match[1]}/{match[2]}" if match else None


def current_commit(learning_file: str | Path = LEARNING_MD) -> Commit | None:
    """The commit the working tree is on; None outside a git checkout."""
    full = (_git("rev-parse", "HEAD") or "").strip()
    if not full:
        return None
    # "XY path" per changed file; the file being written is not what the checks ran.
    changed = (_git("status", "--porcelain", "--untracked-files=no") or "").splitlines()
    dirty = any(line[3:] != link_path(learning_file) for line in changed)
    remotes = sorted((_git("remote") or "").split(), key=lambda name: name != "origin")
    urls = (github_url(_git("remote", "get-url", name) or "") for name in remotes)
    base = next((url for url in urls if url), None)
    return Commit(full[:7], full, dirty, f"{base}/commit/{full}" if base else None)


def measured_configs(phase: str) -> list[str]:
    """The phase's configs its done checks load: the registry's names found in its done.py."""
    source = (Path(__file__).parent / get_phase(phase).package / "done.py").read_text()
    return [name for name in get_phase(phase).configs if f'"{name}"' in source]


def record_checks(
    phase: str,
    checks: Sequence[Check],
    path: str | Path = LEARNING_MD,
    *,
    items: Sequence[str] | None = None,
    today: str | None = None,
    commit: Commit | None = None,
    run_dirs: Sequence[str | Path] = (),
    checkpoints: Sequence[str | Path] = (),
) -> list[str]:
    """What ``labkit.done PHASE --record`` writes: a dated note with the figures of each passing
    check, one Links line (the commit, the configs measured, run folders and reference
    checkpoints when given: the done checks themselves run in temporary folders), and the project
    out of Active Projects when every check passed, else its next task moved on (if the lab
    wrote it). Figures noted before (on any day, timings aside) are not noted again.
    ``checks`` are the results in the order of ``items`` (default: the phase's ``DONE_CHECKS``
    docstrings). Returns what was done, one line each."""
    phase = phase.lower()
    doc = LearningFile.read(path)
    original = list(doc.lines)
    items = done_items(phase) if items is None else items
    if len(items) != len(checks):
        raise ValueError(f"{len(checks)} results for {len(items)} done items of {phase}")
    today = today or datetime.date.today().isoformat()
    name, passed = phase.upper(), [c for c in checks if c.passed]
    bodies = [
        f"{name} {item_label(item, i)} passed: {c.name}: {c.measured} (target: {c.target})"
        for i, (item, c) in enumerate(zip(items, checks))
        if c.passed
    ]
    failed = [item for item, c in zip(items, checks) if not c.passed]
    if not failed:
        bodies.insert(0, f"{name} done: all {len(checks)} checks passed.")
    report = [f"noted: {body}" for body in add_notes(doc, bodies, today, without_timings)]
    report += [f"not recorded (failed): {item}" for item in failed]
    if passed:
        commit = commit or current_commit(path)
        parts = [f"commit {commit.markdown()}" if commit else "commit unknown (no git checkout)"]
        parts += [f"config [{c}](labkit/configs/{c}.yaml)" for c in measured_configs(phase)]
        for target in [*run_dirs, *checkpoints]:
            rel = link_path(target)
            parts.append(f"[{rel}]({rel})" + ("" if tracked(target) else " (local, not in git)"))
        line = f"- {name} done checks, {len(passed)}/{len(checks)} passed: " + "; ".join(parts)
        if add_link(doc, line):
            report.append(f"linked: {line[2:]}")
    for i, finished, project, task in reversed(projects(doc)):
        if project != phase:
            continue
        if not failed:
            del doc.lines[i]
            report.append(f"{name} moved out of Active Projects: every check passed")
        elif not finished and task in [*items, all_recorded(phase)] and task != failed[0]:
            # The lab's own next task moves on; one the learner wrote stays as it is.
            doc.lines[i] = project_line(phase, failed[0]) + doc.lines[i][len(doc.text(i)) :]
            report.append(f"{name} next task: {failed[0]}")
    if doc.lines != original:
        doc.write()
    else:
        report.append(f"nothing new to record; {path} is unchanged.")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.learning",
        description="Keep LEARNING.md's bookkeeping: active projects, dated notes, links.\n"
        "Recording done checks: python -m labkit.done PHASE --record.",
        epilog="phases:\n" + "\n".join(f"  {p.name.upper()}  {p.title}" for p in PHASES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    file_help = f"the LEARNING.md to edit (default: {link_path(LEARNING_MD)} of this repository)"
    for command, help_text in (
        ("start", "put a phase into Active Projects, its first unchecked done item as next task"),
        ("note", "add a dated one-line note on top of Notes"),
        ("link", "add a run folder or a file (checkpoint, config) to Links"),
    ):
        sub = commands.add_parser(command, help=help_text, description=help_text)
        if command == "start":
            sub.add_argument(
                "phase", type=str.lower, choices=sorted(PHASES), metavar="PHASE", help="P00 ... P50"
            )
        elif command == "note":
            sub.add_argument("text", nargs="+", help="the note, one line")
        else:
            sub.add_argument("target", help="a run folder under runs/, or a file")
        sub.add_argument("--file", default=str(LEARNING_MD), help=file_help)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start(args.phase, args.file))
        elif args.command == "note":
            print(note(" ".join(args.text), args.file))
        else:
            print(link(args.target, args.file))
    except LearningFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
