import os

import pytest
import torch

# Two cores, shared: one intra-op thread keeps small ops from stalling on thread hand-offs.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
