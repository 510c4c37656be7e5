import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from labkit.data.common import make_loader
from labkit.trainers.supervised_trainer import TrainingDiverged, train, train_step
from labkit.utils.checkpoint import list_checkpoints
from labkit.utils.device import amp_policy
from labkit.utils.logging import read_metrics
from labkit.utils.seed import set_seed


def tiny_problem(n=64):
    set_seed(0)
    x = torch.randn(n, 5)
    y = (x[:, 0] + x[:, 1] > 0).long()  # a linearly separable rule
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    loader = make_loader(TensorDataset(x, y), batch_size=16, seed=0)
    return model, optimizer, loader


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def test_loss_decreases_over_a_few_steps():
    model, optimizer, loader = tiny_problem()
    result = train(model, optimizer, loader, ce, max_steps=40, progress=False)
    first, last = sum(result.losses[:4]) / 4, sum(result.losses[-4:]) / 4
    assert last < 0.5 * first, (first, last)
    assert len(result.losses) == 40 and result.step == 40


def test_train_step_clips_and_reports_the_unclipped_norm():
    model, optimizer, loader = tiny_problem()
    batch = next(iter(loader))
    out = train_step(model, optimizer, batch, ce, grad_clip=1e-3)
    assert out.grad_norm > 1e-3  # the norm before clipping is what gets logged
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step


def test_bf16_autocast_path_runs_on_cpu():
    model, optimizer, loader = tiny_problem()
    result = train(
        model,
        optimizer,
        loader,
        ce,
        max_steps=5,
        amp=amp_policy("cpu", requested="bf16"),
        progress=False,
    )
    assert len(result.losses) == 5


def test_run_folder_gets_metrics_tensorboard_and_checkpoints(tmp_path):
    model, optimizer, loader = tiny_problem()
    eval_calls = []

    def evaluate(m):
        eval_calls.append(1)
        return {"accuracy": 0.5}

    train(
        model,
        optimizer,
        loader,
        ce,
        max_steps=10,
        run_dir=tmp_path,
        ckpt_every=4,
        keep_last=2,
        log_every=5,
        eval_every=5,
        eval_fn=evaluate,
        progress=False,
    )
    rows = read_metrics(tmp_path)
    assert {"train/loss", "train/lr", "train/grad_norm", "perf/samples_per_s"} <= set(rows[0])
    assert any("eval/accuracy" in row for row in rows) and len(eval_calls) == 2  # steps 5, 10
    assert list(tmp_path.glob("events.out.tfevents.*"))
    # checkpoints at 4 and 8, a final one at 10; keep_last=2 leaves 8 and 10
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [
        "step_00000008.pt",
        "step_00000010.pt",
    ]


def test_resume_gives_identical_losses_and_weights(tmp_path):
    model, optimizer, loader = tiny_problem()
    straight = train(model, optimizer, loader, ce, max_steps=10, progress=False)  # 4 steps/epoch
    straight_weights = [p.detach().clone() for p in model.parameters()]

    model, optimizer, loader = tiny_problem()
    first = train(model, optimizer, loader, ce, max_steps=6, run_dir=tmp_path, progress=False)
    model, optimizer, loader = tiny_problem()
    second = train(
        model,
        optimizer,
        loader,
        ce,
        max_steps=10,
        resume_from=first.last_checkpoint,
        progress=False,
    )
    assert first.losses + second.losses == straight.losses  # resumed mid-epoch, exact
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), straight_weights))


def test_nan_loss_stops_with_step_and_writes_no_checkpoint(tmp_path):
    model, optimizer, loader = tiny_problem()
    calls = {"n": 0}

    def loss_that_explodes(m, batch):
        calls["n"] += 1
        loss = ce(m, batch)
        return loss * float("nan") if calls["n"] == 3 else loss

    with pytest.raises(TrainingDiverged, match="at step 3"):
        train(
            model,
            optimizer,
            loader,
            loss_that_explodes,
            max_steps=10,
            run_dir=tmp_path,
            ckpt_every=1,
            progress=False,
        )
    names = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_00000001.pt", "step_00000002.pt"]  # nothing for the NaN step


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path):
    model, optimizer, loader = tiny_problem()
    calls = {"n": 0}

    def loss_then_signal(m, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            signal.raise_signal(signal.SIGTERM)  # as `kill` or a cluster scheduler would
        return ce(m, batch)

    result = train(
        model,
        optimizer,
        loader,
        loss_then_signal,
        max_steps=100,
        run_dir=tmp_path,
        progress=False,
        eval_fn=lambda m: {"accuracy": 0.0},
    )
    assert result.stopped_by == "SIGTERM" and result.step == 3
    assert result.eval_history == []  # a stop request saves and leaves: no final evaluation
    assert result.last_checkpoint.name == "step_00000003.pt"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
