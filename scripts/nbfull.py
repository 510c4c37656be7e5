"""``make nbfull``: every notebook's default "Run all" (papermill, no smoke flag), claims checked.

Each notebook runs as a learner's "Run all" would (one torch thread, offline), into
``runs/notebooks/<notebook>-full-<time>.ipynb``. A notebook fails when papermill fails, when any
output line starts with ``CLAIM FAILED`` (printed by :func:`labkit.utils.claims.claim`), when it
checks fewer than :data:`MIN_CLAIMS` claims, or when it saved a progress bar that is not finished.
Each notebook's wall time and the machine's load are printed, since the lessons state their run
time (budget: 4 minutes idle, 5 with the other core busy).

    python scripts/nbfull.py                       # every notebooks/NN_*.ipynb
    python scripts/nbfull.py 20_diffusion_mini     # some of them
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
MIN_CLAIMS = 6
BUDGET_SECONDS = 300  # 5 minutes with the other core busy
PASSED, FAILED, NOT_CHECKED = "✓ ", "CLAIM FAILED", "· (smoke: not checked)"
# labkit.utils.exercise prints "✓ my_fn matches the reference on N inputs": a check, not a claim
EXERCISE = re.compile(r"^✓ \S+ matches the reference on \d+ inputs")


def output_lines(path: Path) -> list[str]:
    """Every line of text the notebook printed (streams and text results)."""
    lines = []
    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            lines += ("".join(text) if isinstance(text, list) else text).splitlines()
    return lines


# The last frame of a tqdm text bar ("  37%|███▋      | 37/100 [...]"); frames end in \r or \n.
BAR_FRAME = re.compile(r"(\d+)%\|")


def unfinished_bars(path: Path) -> list[str]:
    """Progress bars the saved notebook shows unfinished: a text bar whose last frame is below
    100 %, or a widget bar (saved headless, a widget keeps its first frame, "0 %").

    A kernel sends each frame as its own stream output; Jupyter joins consecutive outputs of one
    stream before it draws them, and so does this reader.
    """
    found = []
    for cell in nbformat.read(path, as_version=4).cells:
        groups: list[list] = []  # [stream name, joined text] of each run of consecutive outputs
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "FloatProgress" in "".join(data.get("text/plain", "")):
                found.append(f"a widget bar: {''.join(data['text/plain'])[:60]}")
            name = out.get("name") if out.get("output_type") == "stream" else None
            if groups and groups[-1][0] == name:
                groups[-1][1] += "".join(out.get("text", ""))
            else:
                groups.append([name, "".join(out.get("text", ""))])
        for _, text in groups:
            last = {}  # one bar per description (the text before the percentage)
            for frame in re.split(r"[\r\n]", text):
                if match := BAR_FRAME.search(frame):
                    last[frame[: match.start()].strip()] = frame.strip()
            found += [f for f in last.values() if BAR_FRAME.search(f).group(1) != "100"]
    return found


def run_notebook(name: str, out_dir: Path) -> tuple[bool, str]:
    source = REPO / "notebooks" / f"{name}.ipynb"
    target = out_dir / f"{name}-full-{time.strftime('%Y%m%d-%H%M%S')}.ipynb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("LABKIT_SMOKE", None)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "papermill", "-k", "labkit", "--log-level", "WARNING", str(source), str(target)],  # fmt: skip
        cwd=REPO,
        env=env,
    )
    seconds = time.perf_counter() - start
    load = f"load {load_before:.1f}-{os.getloadavg()[0]:.1f}"
    lines = output_lines(target) if target.is_file() else []
    passed = [ln for ln in lines if ln.startswith(PASSED) and not EXERCISE.match(ln)]
    failed = [ln for ln in lines if ln.startswith(FAILED)]
    unchecked = [ln for ln in lines if ln.startswith(NOT_CHECKED)]
    problems = [f"  {ln}" for ln in failed + unchecked]
    if target.is_file():
        problems += [f"  unfinished progress bar saved: {bar}" for bar in unfinished_bars(target)]
    if done.returncode != 0:
        problems.append(f"  papermill failed (exit {done.returncode}); see {target}")
    if len(passed) + len(failed) < MIN_CLAIMS:
        problems.append(f"  only {len(passed) + len(failed)} checked claims (need {MIN_CLAIMS})")
    over = f", OVER the {BUDGET_SECONDS} s budget" if seconds > BUDGET_SECONDS else ""
    head = (
        f"{name}: {seconds:.0f} s wall ({load}){over}; {len(passed)} claims ✓, {len(failed)} failed"
    )
    return not problems, "\n".join([head, *problems])


def main(names: list[str]) -> int:
    names = names or sorted(p.stem for p in (REPO / "notebooks").glob("[0-9]*.ipynb"))
    out_dir = REPO / "runs" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        print(f"running {name} ...", flush=True)
        ok, report = run_notebook(name, out_dir)
        print(report, flush=True)
        results.append((ok, report))
    print("\n".join(["", "nbfull:", *(r for _, r in results)]))
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
