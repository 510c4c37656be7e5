"""pytest hooks for `make nbtest` (nbval): a notebook cell that draws must produce an image.

nbval executes every notebook but, with --nbval-lax, compares no outputs: a kernel that turns
every plot into text (MPLBACKEND=Agg leaking into it, as `export MPLBACKEND` in the Makefile
once did) passes unnoticed. Here a cell whose top level calls ``plt.show()`` or displays an
``Image`` fails when it produced no image output. tests/test_papermill.py checks the same for
`make rerun`'s papermill path.
"""

import re

import pytest

IMAGES = ("image/png", "image/gif")
DRAWS = re.compile(r"^(plt\.show\(\)|display\(Image\()", re.MULTILINE)  # unindented: it runs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    cell = getattr(item, "cell", None)  # nbval's IPyNbCell
    if call.when != "call" or not report.passed or cell is None or not DRAWS.search(cell.source):
        return
    outputs = getattr(item, "test_outputs", None) or []
    if not any(mime in out.get("data", {}) for out in outputs for mime in IMAGES):
        first = cell.source.strip().splitlines()[0]
        report.outcome = "failed"
        report.longrepr = (
            f"{item.name} ({first!r}) shows a figure but the kernel produced no image: is "
            "MPLBACKEND=Agg set for it? Jupyter and papermill need the inline backend."
        )
