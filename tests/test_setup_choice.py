import importlib.util
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "choose_torch", Path(__file__).resolve().parents[1] / "scripts" / "choose_torch.py"
)
choose_torch_module = importlib.util.module_from_spec(spec)
sys.modules["choose_torch"] = choose_torch_module  # dataclasses look their module up there
spec.loader.exec_module(choose_torch_module)
choose_torch = choose_torch_module.choose_torch
parse = choose_torch_module.parse_compute_caps


def test_parse_nvidia_smi_output():
    assert parse("6.1\n8.6\n\n") == [(6, 1), (8, 6)]
    assert parse("") == []
    assert parse("[N/A]\n") == []


def test_gtx_1060_gets_cuda_126_wheels():
    choice = choose_torch([(6, 1)])
    assert "https://download.pytorch.org/whl/cu126" in choice.pip_args
    assert "torch<2.15" in choice.pip_args and "6.1" in choice.reason


@pytest.mark.parametrize("caps", [[], [(7, 5)], [(8, 6)], [(9, 0)]])
def test_newer_gpus_and_no_gpu_get_default_wheels(caps):
    choice = choose_torch(caps)
    assert "--index-url" not in choice.pip_args
    assert any(arg.startswith("torch==") for arg in choice.pip_args)


def test_mixed_gpus_follow_the_oldest():
    assert "--index-url" in choose_torch([(8, 6), (6, 1)]).pip_args


def test_override_wins():
    assert "--index-url" not in choose_torch([(6, 1)], override="default").pip_args
    assert "https://download.pytorch.org/whl/cpu" in choose_torch([], override="cpu").pip_args
    assert "torch<2.15" in choose_torch([], override="cu126").pip_args
