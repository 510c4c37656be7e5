"""P50's task as a lab run: checked configs, the run folder, exact resume, signals, the NaN guard,
and the CLI (``python -m labkit.train p50_splat2d``). Tiny fits: 32x32 images, a 24-pixel scene."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit.splatting import done, task
from labkit.splatting.checkpoints import read_fit_checkpoint, save_fit_checkpoint
from labkit.splatting.fit import ImageFit
from labkit.splatting.loop import IMAGE_TAG, run_fit
from labkit.train import main
from labkit.trainers.guards import TrainingDiverged
from labkit.utils.checkpoint import list_checkpoints, read_checkpoint
from labkit.utils.config import ConfigError, apply_overrides, load_config
from labkit.utils.logging import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.size=32", "model.num_gaussians=120", "trainer.max_steps=12", "trainer.log_every=4",
        "trainer.eval_every=6", "trainer.ckpt_every=6"]  # fmt: skip


def tiny(name: str = "p50_splat2d", *overrides: str) -> dict:
    return apply_overrides(load_config(name), [*(TINY if "2d" in name else []), *overrides])


# ---------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("trainer.eval_every=-1", "trainer.eval_every"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("optim.means_lr_final=0", "optim.means_lr_final"),
        ("optim.scheduler=cosine", "optim.scheduler"),
        ("model.mode=add", "model.mode"),
        ("model.num_gaussians=0", "model.num_gaussians"),
        ("data.image=lena", "data.image"),
        ("data.size=4", "data.size"),
        ("loss.ssim_weight=2", "loss.ssim_weight"),
        ("densify.min_opacity=1", "densify.min_opacity"),
        ("device=tpu", "device"),  # auto | cpu | mps | cuda | cuda:N, as every phase
        ("seed=1.5", "seed"),
        ("model.sh_degree=1", "model.sh_degree"),  # a 3D key in a 2D config: unknown
    ],
)
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        task.check(tiny("p50_splat2d", override))


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.sh_degree=2", "'model.sh_degree' is 2"),
        ("data.num_train=1", "'data.num_train' is 1"),
        ("model.init=image", "'model.init' is 'image'"),
        ("model.sh_degre=1", "Did you mean 'model.sh_degree'"),
        ("kind=volume", "'kind' is 'volume'"),
    ],
)
def test_3d_config_is_checked_too(override, words):
    with pytest.raises(ConfigError, match=words):
        task.check(tiny("p50_splat3d", override))


def test_rules_across_keys_name_both():
    with pytest.raises(ConfigError, match="densify.start .* densify.stop"):
        task.check(tiny("p50_splat2d", "densify.start=500", "densify.stop=100"))
    with pytest.raises(ConfigError, match="densify.max_gaussians .* model.num_gaussians"):
        task.check(tiny("p50_splat2d", "densify.enabled=true", "densify.max_gaussians=50"))


def test_a_partial_config_is_laid_over_its_kinds_yaml():
    cfg = task.check({"kind": "scene3d", "trainer": {"max_steps": 5}})
    assert cfg["experiment"] == "p50_splat3d" and cfg["trainer"]["max_steps"] == 5
    assert cfg["optim"]["lr"] == 1.0 and cfg["model"]["sh_degree"] == 0


# ---------------------------------------------------------------------------------------------
# A run: folder, resume, signals, NaN


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """A tiny 2D run through the CLI's main, in-process (densifying, checkpoints at 6 and 12)."""
    runs = tmp_path_factory.mktemp("runs")
    overrides = [*TINY, "densify.enabled=true", "densify.start=4", "densify.stop=8",
                 "densify.every=4", "densify.grad_threshold=0", "densify.max_gaussians=160"]  # fmt: skip
    assert main(["p50_splat2d", *overrides, "--runs-dir", str(runs)]) == 0
    (run_dir,) = (runs / "p50_splat2d").iterdir()
    return run_dir


def test_a_run_writes_config_metrics_checkpoints_and_tensorboard(cli_run):
    for name in ("config.yaml", "env.json", "status.json", "metrics.jsonl"):
        assert (cli_run / name).is_file(), name
    assert [p.name for p in list_checkpoints(cli_run / "checkpoints")] == [
        "step_00000006.pt",
        "step_00000012.pt",
    ]
    rows = read_metrics(cli_run)
    keys = set().union(*rows)
    assert {"train/loss", "train/num_gaussians", "eval/psnr", "eval/ssim"} <= keys
    assert {"eval/num_gaussians", "perf/steps_per_s", "perf/cpu_s"} <= keys
    evals = [row for row in rows if "eval/psnr" in row]
    assert [row["step"] for row in evals] == [0, 6, 12] and evals[-1]["eval/psnr"] > evals[0][
        "eval/psnr"
    ]
    assert evals[-1]["eval/num_gaussians"] == 160  # grown by densification to the cap

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(cli_run))
    events.Reload()
    assert IMAGE_TAG in events.Tags()["images"] and "eval/psnr" in events.Tags()["scalars"]


def test_the_checkpoint_holds_the_whole_fit(cli_run):
    payload = read_checkpoint(cli_run / "checkpoints" / "step_00000012.pt")
    assert payload["step"] == 12 and payload["config"]["kind"] == "image2d"
    assert payload["model"]["means"].shape == (160, 2)  # the count after densification
    assert len(payload["optimizer"]["state"]) == 5  # Adam moments for each tensor
    fit = payload["extra"]["fit"]
    assert {"step", "generator", "grad_sum", "grad_count"} <= set(fit)


def test_resume_may_grow_the_budget_only_without_a_schedule(cli_run, capsys):
    assert main(["--resume", str(cli_run), "trainer.max_steps=20"]) == 2
    assert "exponential LR schedule" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["p50_splat2d", "p50_splat3d"])
def test_stopped_and_resumed_equals_straight(tmp_path, name):
    overrides = done.TINY_2D if "2d" in name else done.TINY_3D
    same = done.resume_matches(tiny(name, *overrides), 15, tmp_path)
    assert all(same.values()), same


def test_the_lab_run_and_the_in_memory_loop_fit_the_same_gaussians():
    # One loop (run_fit) serves fit_2d / fit_3d and task.run; logging, evaluation and
    # checkpoint plumbing draw nothing from the fit's generator, so the fit is the same.
    cfg = task.check(tiny("p50_splat2d", *done.TINY_2D))
    lab = task.run(cfg, None, progress=False)
    memory = run_fit(task.build(cfg), eval_every=0)
    assert lab.details["losses"] == memory.loss and len(memory.loss) == 40
    assert torch.equal(lab.setup.gaussians.means, memory.gaussians.means)
    assert lab.details["eval_history"][-1] == memory.eval_history[-1]
    assert memory.eval_steps == [40] and lab.details["eval_history"][0]["step"] == 0


def test_resume_point_reads_the_newest_checkpoint(cli_run):
    point = task.resume_point(cli_run)
    assert point.run_dir == cli_run and point.step == 12
    assert point.config["kind"] == "image2d" and point.resume_from.path.name == "step_00000012.pt"


def test_sigterm_stops_after_the_step_with_a_checkpoint(tmp_path, monkeypatch):
    step = ImageFit.train_step

    def step_then_signal(fit):
        loss = step(fit)
        if fit.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by StopOnSignal: the step completes
        return loss

    monkeypatch.setattr(ImageFit, "train_step", step_then_signal)
    result = task.run(tiny("p50_splat2d"), tmp_path, progress=False)
    assert result.interrupted and result.summary["stopped_by"] == "SIGTERM"
    assert result.summary["step"] == 5
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000005.pt"]


def test_a_non_finite_loss_stops_the_run_and_saves_nothing(tmp_path, monkeypatch):
    def image_with_a_nan(name, size):
        image = torch.rand(size, size, 3)
        image[3, 4, 1] = float("nan")
        return image

    monkeypatch.setattr(task, "load_image", image_with_a_nan)
    with pytest.raises(TrainingDiverged, match="at step 0"):  # PSNR of the first picture
        task.run(tiny("p50_splat2d"), tmp_path, progress=False)
    assert not list_checkpoints(tmp_path / "checkpoints")


def test_a_non_finite_loss_mid_run_names_its_step(tmp_path, monkeypatch):
    step = ImageFit.train_step

    def diverging(fit):
        loss = step(fit)
        return float("nan") if fit.step == 8 else loss

    monkeypatch.setattr(ImageFit, "train_step", diverging)
    with pytest.raises(TrainingDiverged, match="train/loss = nan at step 8"):
        task.run(tiny("p50_splat2d"), tmp_path, progress=False)
    # the checkpoint of step 6 stays, none is written for the diverged step
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000006.pt"]


def test_non_finite_gaussians_are_never_saved(tmp_path):
    cfg = task.check(tiny("p50_splat2d"))
    fit = task.build(cfg)
    with torch.no_grad():
        fit.gaussians.colors[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="colors holds NaN or Inf"):
        save_fit_checkpoint(tmp_path / "step.pt", fit, cfg, {})
    assert not list(tmp_path.iterdir())


def test_init_from_starts_a_new_fit_from_the_gaussians(cli_run, tmp_path):
    checkpoint = cli_run / "checkpoints" / "step_00000012.pt"
    result = task.run(tiny("p50_splat2d"), tmp_path, progress=False, init_from=checkpoint)
    first = result.details["eval_history"][0]
    assert first["step"] == 0 and first["eval/num_gaussians"] == 160  # the parent's Gaussians
    parent = [row for row in read_metrics(cli_run) if "eval/psnr" in row][-1]
    assert first["eval/psnr"] == parent["eval/psnr"]  # the same picture as the parent's last
    assert result.summary["step"] == 12  # a new run: its own step count


def test_a_checkpoint_of_the_other_kind_is_refused(cli_run):
    with pytest.raises(Exception, match="holds a image2d fit, not scene3d"):
        read_fit_checkpoint(cli_run, "scene3d")


# ---------------------------------------------------------------------------------------------
# The CLI as a user runs it


def test_cli_subprocess_smoke(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-m", "labkit.train", "p50_splat2d", "trainer.max_steps=3",
         "data.size=32", "model.num_gaussians=50", "--runs-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["step"] == 3 and summary["kind"] == "image2d" and summary["eval/psnr"] > 5
    assert (Path(summary["run_dir"]) / "checkpoints" / "step_00000003.pt").is_file()
