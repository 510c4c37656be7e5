"""One progress bar for every long loop: a terminal bar in a shell, a text bar in Jupyter.

``tqdm.auto`` draws a widget in a Jupyter kernel. A widget is only updated by a live frontend:
a notebook executed headless (papermill, nbval, ``make nbfull``) saves its first frame, a bar
stuck at "0 %" that says the opposite of what ran. A text bar writes ``\\r``-separated frames to
stderr instead; a frontend and a saved notebook both show the last one, the finished bar.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.std import tqdm

# In a kernel every frame is kept in the saved cell output: a frame a second keeps a 4-minute run
# to ~250 short lines, where tqdm's default 0.1 s would keep ~2,400.
KERNEL_MIN_INTERVAL_S = 1.0


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (IPython's kernel app is running)."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell"


def progress_bar(**kwargs: Any) -> tqdm:
    """A ``tqdm`` bar (the same arguments: ``total``, ``initial``, ``desc``, ``unit``, ``disable``)
    that ends as a finished bar in a saved notebook; in a terminal it sizes itself to the window."""
    if in_kernel():
        kwargs = {"mininterval": KERNEL_MIN_INTERVAL_S, "ncols": 100, **kwargs}
        return tqdm(file=sys.stderr, **kwargs)
    return tqdm(dynamic_ncols=True, **kwargs)


def write_above(line: str, file: Any = None) -> None:
    """Print ``line`` above any open bar (the bar is cleared, the line printed, the bar redrawn)."""
    tqdm.write(line, file=file)
