"""P20 task: the config schema, a tiny run through ``run`` (checkpoints carry the EMA, samples go
to TensorBoard, the checkpoint samples and evaluates again through ``labkit.diffusion.trained``),
exact resume with the EMA, the GPU configs' data paths and memory estimates, and the CLI. The
judge has its own file (test_diffusion_judge.py).

Runs use a 38 k-parameter U-Net, T = 100 and no judge, so the file takes seconds on one thread.
"""

from __future__ import annotations

import pytest
import torch

from labkit.data.common import DataError
from labkit.diffusion import task
from labkit.diffusion.done import TINY as DONE_TINY
from labkit.diffusion.memory import training_memory_estimate
from labkit.diffusion.trained import evaluate_checkpoint, load_trained
from labkit.train import main as train_main
from labkit.utils.checkpoint import read_checkpoint
from labkit.utils.config import ConfigError, apply_overrides, load_config

CONFIGS = ["p20_ddpm", "p20_ddpm_gpu", "p20_cifar_gpu"]
CPU = torch.device("cpu")
TINY = ["device=cpu", *DONE_TINY, "trainer.log_every=1"]


def tiny_cfg(*overrides: str, config: str = "p20_ddpm") -> dict:
    return apply_overrides(load_config(config), [*TINY, *overrides])


# ---------------------------------------------------------------- the schema


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_pass_the_schema(name):
    cfg = task.check(load_config(name))
    assert cfg["phase"] == "p20" and cfg["experiment"] == name


@pytest.mark.parametrize(
    "override, named",
    [
        ("data.source=svhn", "data.source"),
        ("data.image_size=32", "data.image_size"),  # 28 px digits
        ("model.channel_mults=[]", "model.channel_mults"),
        ("model.base_channels=12", "norm_groups"),  # 12 channels in 8 groups
        ("diffusion.prediction=score", "diffusion.prediction"),
        ("diffusion.num_steps=1.5", "diffusion.num_steps"),
        ("ema.decay=1.0", "ema.decay"),
        ("loss.weighting=snr", "loss.weighting"),
        ("loss.min_snr_gamma=0", "loss.min_snr_gamma"),  # γ must be > 0
        ("sample.sampler=plms", "sample.sampler"),
        ("sample.steps=2000", "sample.steps"),  # more than T = 1000
        ("sample.eta=-1", "sample.eta"),
        ("eval.confident_threshold=1.5", "eval.confident_threshold"),
        ("optim.lr=-1", "optim.lr"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        task.check(apply_overrides(load_config("p20_ddpm"), [override]))


def test_rules_across_sections():
    base = load_config("p20_ddpm")
    with pytest.raises(ConfigError, match="class-conditional"):
        task.check(apply_overrides(base, ["data.class_conditional=false"]))  # guidance is set
    task.check(
        apply_overrides(base, ["data.class_conditional=false", "sample.guidance_scale=null"])
    )
    with pytest.raises(ConfigError, match="judges digits only"):
        task.check(apply_overrides(load_config("p20_cifar_gpu"), ["eval.judge=mnist_cnn"]))
    with pytest.raises(ConfigError, match="β_T"):
        task.check(apply_overrides(base, ["diffusion.schedule=linear", "diffusion.num_steps=20"]))
    with pytest.raises(ConfigError, match="unknown key 'ema.decy'"):
        task.check({**base, "ema": {"decy": 0.9}})


@pytest.mark.parametrize("name", ["p20_ddpm_gpu", "p20_cifar_gpu"])
def test_gpu_configs_fit_a_6gb_card_by_the_estimate(name):
    estimate = training_memory_estimate(task.check(load_config(name)))
    assert estimate["total_gib"] * 2**30 <= 5e9, estimate  # the configs' stated target: ≤ 5 GB
    assert estimate["activations_gib"] > 1.0  # a real count, not zero


# ---------------------------------------------------------------- a tiny run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("p20") / "run"
    cfg = tiny_cfg("trainer.max_steps=4", "trainer.eval_every=2", "trainer.ckpt_every=2")
    return cfg, run_dir, task.run(cfg, run_dir, CPU, progress=False)


def test_run_writes_checkpoints_with_the_ema(tiny_run):
    _, run_dir, outcome = tiny_run
    assert outcome.summary["step"] == 4 and outcome.summary["parameters"] == 38385
    assert [e["step"] for e in outcome.details.eval_history] == [2, 4]
    assert {"eval/val_loss", "eval/sample_seconds"} <= set(outcome.details.last_eval)
    # training's CPU seconds are the loop's, less what sampling and judging took
    assert outcome.summary["cpu/train_seconds"] > 0 and outcome.summary["cpu/eval_seconds"] > 0
    saved = read_checkpoint(run_dir / "checkpoints" / "step_00000004.pt")
    ema = saved["extra"]["objects"]["ema"]
    assert ema["num_updates"] == 4 and ema["shadow"].keys() == saved["model"].keys()
    assert all(torch.equal(ema["shadow"][k], v) for k, v in outcome.setup.ema.shadow.items())
    # After 4 steps with the warm-up (d = 0.1, 0.18, 0.25, 0.31) the EMA trails the weights.
    assert not torch.equal(ema["shadow"]["conv_in.weight"], saved["model"]["conv_in.weight"])


def test_sample_grids_go_to_tensorboard(tiny_run):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    _, run_dir, _ = tiny_run
    events = accumulator.EventAccumulator(str(run_dir))
    events.Reload()
    grids = events.Images("samples/ema")
    assert [g.step for g in grids] == [2, 4]  # one per evaluation, from the same fixed x_T
    assert grids[0].width == 10 * 28 + 11 * 2  # a row of 10 samples, 2 px of padding


def test_a_checkpoint_loads_back_for_sampling(tiny_run):
    _, run_dir, outcome = tiny_run
    trained = load_trained(run_dir, CPU)  # the run folder: its newest checkpoint
    assert trained.step == 4 and trained.conditional and trained.image_shape == (1, 28, 28)
    assert all(torch.equal(trained.ema.shadow[k], v) for k, v in outcome.setup.ema.shadow.items())
    # The same x_T (sample.seed) and EMA weights: the run's last evaluation samples, exactly.
    samples, labels = trained.sample(10)
    assert torch.equal(samples, outcome.setup.monitor.last[1]) and labels.tolist() == list(
        range(10)
    )
    raw, _ = trained.sample(10, weights="raw")
    assert not torch.equal(raw, samples)
    scores = evaluate_checkpoint(run_dir / "checkpoints" / "step_00000004.pt")
    assert scores["val_loss"] == pytest.approx(outcome.details.last_eval["eval/val_loss"])
    # Loud errors for what sampling does not know, or a change the schema refuses.
    with pytest.raises(TypeError, match=r"unknown sample\.\* keys \['step'\]"):
        trained.sample(10, step=5)
    with pytest.raises(ConfigError, match="sample.steps"):
        evaluate_checkpoint(run_dir, steps=500)  # more DDIM steps than T = 100


def test_exact_resume_with_the_ema(tiny_run, tmp_path):
    # 2 steps, stop, resume for 2 more == the fixture's 4 straight steps: losses, weights, EMA.
    cfg, _, straight = tiny_run
    first = task.run(cfg, tmp_path, CPU, stop_after=2, progress=False)
    second = task.run(cfg, tmp_path, CPU, resume_from=first.details.last_checkpoint, progress=False)
    assert first.details.losses + second.details.losses == straight.details.losses
    for name, value in straight.setup.model.state_dict().items():
        assert torch.equal(second.setup.model.state_dict()[name], value), name
    for name, value in straight.setup.ema.shadow.items():
        assert torch.equal(second.setup.ema.shadow[name], value), name
    assert second.setup.ema.num_updates == 4
    assert second.details.last_eval["eval/val_loss"] == straight.details.last_eval["eval/val_loss"]


def test_cli_trains_a_tiny_run(tmp_path):
    overrides = [*TINY, "trainer.max_steps=2", "trainer.eval_every=0"]
    assert train_main(["p20_ddpm", *overrides, "--runs-dir", str(tmp_path)]) == 0
    (run_dir,) = (tmp_path / "p20_ddpm").iterdir()
    assert (run_dir / "config.yaml").is_file() and list((run_dir / "checkpoints").glob("*.pt"))


# ---------------------------------------------------------------- the GPU configs' data, offline


def test_cifar_config_trains_on_a_fake_copy(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    from labkit.diffusion.data import write_cifar10

    write_cifar10(tmp_path)  # the real archive's format, 4 images per file
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    cfg = tiny_cfg(
        f"data.root={tmp_path}", "data.batch_size=8", "trainer.max_steps=2",
        "trainer.eval_every=2", "eval.val_images=4", "model.channel_mults=[1, 2]",
        "model.num_res_blocks=1", "model.dropout=0.1", "diffusion.num_steps=100",
        config="p20_cifar_gpu",
    )  # fmt: skip
    outcome = task.run(cfg, None, CPU, progress=False)
    assert outcome.setup.image_shape == (3, 32, 32) and len(outcome.setup.train_set) == 20
    assert outcome.setup.loss_fn.hflip and "eval/val_loss" in outcome.summary
    assert "eval/confident_share" not in outcome.summary  # no judge for CIFAR-10


def test_gpu_mnist_config_reads_torchvision_files_or_says_what_to_do(tmp_path):
    from test_diffusion_data import write_fake_mnist

    cfg = task.check(apply_overrides(load_config("p20_ddpm_gpu"), [f"data.root={tmp_path}"]))
    with pytest.raises(DataError, match="data.download=true"):
        task.build_datasets(cfg)
    write_fake_mnist(tmp_path, train=12, test=5)
    train, heldout = task.build_datasets(cfg)
    assert train.tensors[0].shape == (12, 1, 28, 28) and heldout.tensors[0].shape == (5, 1, 28, 28)
