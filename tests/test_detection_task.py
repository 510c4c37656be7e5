"""P10 task: a smoke run through ``run``, exact resume across the backbone unfreeze, the CLI.

Everything uses 64-px images, a 16-channel head and a handful of steps, so the file runs in
seconds on one CPU thread. The offline ``pretrained=true`` error is tested in test_detection_model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from labkit.data.common import DataError
from labkit.detection import model as model_module
from labkit.detection.evaluate import precision_recall_at
from labkit.detection.task import build, run
from labkit.train import main as train_main
from labkit.utils.config import ConfigError, apply_overrides, load_config
from labkit.utils.seed import set_seed

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "device=cpu",
    "data.image_size=64",
    "data.batch_size=4",
    "data.eval_batch_size=4",
    "data.train_images=16",
    "data.val_images=4",
    "model.head_channels=16",
    "eval.log_images=2",
    "optim.warmup_steps=2",
]


def tiny_cfg(*overrides: str) -> dict:
    return apply_overrides(load_config("p10_detection"), [*TINY, *overrides])


def test_run_trains_evaluates_and_logs(tmp_path):
    cfg = tiny_cfg("trainer.max_steps=3", "trainer.eval_every=3", "trainer.log_every=1")
    outcome = run(cfg, tmp_path, torch.device("cpu"), progress=False)
    result, setup = outcome.details, outcome.setup
    assert result.step == 3 and len(result.losses) == 3
    assert all(torch.isfinite(torch.tensor(result.losses)))
    evaluation = result.last_eval
    assert {"eval/map50", "eval/precision", "eval/recall"} <= set(evaluation)
    assert 0.0 <= evaluation["eval/map50"] <= 1.0
    assert setup.class_names == ("circle", "square", "triangle")
    assert (tmp_path / "checkpoints").is_dir()
    assert list(tmp_path.glob("events.out.tfevents.*"))  # scalars and the prediction grid


def test_backbone_frozen_until_unfreeze_at():
    # With unfreeze_at=2, two steps change the head only; a third moves the backbone too.
    cfg = tiny_cfg("trainer.max_steps=3", "trainer.eval_every=0", "model.unfreeze_at=2")
    set_seed(cfg["seed"])  # as run() does before it builds
    initial = build(cfg, torch.device("cpu")).model.backbone.state_dict()
    assert not any(
        p.requires_grad for p in build(cfg, torch.device("cpu")).model.backbone.parameters()
    )
    two = run(cfg, None, torch.device("cpu"), stop_after=2, progress=False).setup
    # Same seed, same initial weights: the frozen backbone (BatchNorm statistics too) is intact.
    assert all(torch.equal(initial[k], v) for k, v in two.model.backbone.state_dict().items())
    three = run(cfg, None, torch.device("cpu"), stop_after=3, progress=False).setup
    assert three.model.backbone_trainable
    assert not all(torch.equal(initial[k], v) for k, v in three.model.backbone.state_dict().items())


def test_exact_resume_across_the_unfreeze(tmp_path):
    # 3 + 3 steps must equal 6 straight steps, with the unfreeze (step 4) and random flips in the
    # resumed half: the stage is a function of the step and the flip RNG is restored.
    steps = 3
    cfg = tiny_cfg(
        f"trainer.max_steps={2 * steps}",
        f"trainer.ckpt_every={steps}",
        "trainer.eval_every=0",
        "model.unfreeze_at=4",
        "model.backbone_lr_scale=0.1",
        "eval.log_images=0",
    )
    cpu = torch.device("cpu")
    straight_run = run(cfg, tmp_path / "straight", cpu, progress=False)
    straight, straight_setup = straight_run.details, straight_run.setup
    first = run(cfg, tmp_path / "split", cpu, stop_after=steps, progress=False).details
    second_run = run(
        cfg, tmp_path / "split", cpu, resume_from=first.last_checkpoint, progress=False
    )
    second, split_setup = second_run.details, second_run.setup
    assert straight.losses == first.losses + second.losses
    for a, b in zip(
        straight_setup.model.state_dict().values(),
        split_setup.model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_overfit_mode_trains_and_evaluates_on_the_same_images():
    cfg = tiny_cfg("trainer.overfit=4", "trainer.max_steps=1")
    setup = build(cfg, torch.device("cpu"))
    assert setup.train_set is setup.eval_set and len(setup.eval_set) == 4
    assert setup.train_loader.batch_size == 4
    # No augmentation: the same item twice is the same image.
    assert torch.equal(setup.train_set[0][0], setup.train_set[0][0])


def test_precision_recall_at_a_score_threshold():
    gt = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]),
        "labels": torch.tensor([0, 0]),
    }
    pred = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
        "scores": torch.tensor([0.9, 0.6, 0.2]),  # a hit, a miss, and a hit below the threshold
        "labels": torch.tensor([0, 0, 0]),
    }
    # At 0.5: 2 detections, 1 true positive (precision 1/2), 1 of 2 objects found (recall 1/2).
    assert precision_recall_at([pred], [gt], 1, score_thresh=0.5) == (0.5, 0.5)
    # At 0.1: 3 detections, 2 true positives; both objects found.
    assert precision_recall_at([pred], [gt], 1, score_thresh=0.1) == (2 / 3, 1.0)


def test_missing_voc_and_unknown_dataset_fail_clearly(tmp_path):
    cfg = apply_overrides(
        load_config("p10_voc"), [f"data.root={tmp_path}", "model.pretrained=false"]
    )
    with pytest.raises(DataError, match="download=True"):
        build(cfg, torch.device("cpu"))
    with pytest.raises(ConfigError, match="shapes or voc"):
        build(tiny_cfg("data.dataset=coco"), torch.device("cpu"))


def test_cli_reports_a_failed_weights_download_without_a_traceback(monkeypatch, tmp_path, capsys):
    # The model-level error is tested in test_detection_model; here: the CLI turns it into a
    # one-line message and exit code 2.
    def offline(weights=None):
        raise urllib.error.URLError("no network")

    _, weights = model_module._BACKBONES["resnet18"]
    monkeypatch.setitem(model_module._BACKBONES, "resnet18", (offline, weights))
    code = train_main(
        ["p10_detection", "model.pretrained=true", *TINY, "--runs-dir", str(tmp_path)]
    )
    assert code == 2
    assert "model.pretrained=false" in capsys.readouterr().err


def test_cli_smoke(tmp_path):
    cmd = [sys.executable, "-m", "labkit.train", "p10_detection", "trainer.max_steps=3",
           "trainer.eval_every=0", *TINY, "--runs-dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["step"] == 3 and summary["data"] == "shapes"
    assert "eval/map50" in summary
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()
