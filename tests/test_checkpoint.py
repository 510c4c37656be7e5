import random

import pytest
import torch
from torch import nn

from labkit.utils.checkpoint import (
    CheckpointError,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)


def make(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return model, optimizer, scheduler


def step(model, optimizer, scheduler):
    loss = model(torch.randn(5, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()
    return loss.item()


def test_round_trip_restores_model_optimizer_scheduler(tmp_path):
    model, opt, sched = make()
    for _ in range(3):
        step(model, opt, sched)
    path = save_checkpoint(
        tmp_path / "c.pt", model, opt, step=3, config={"a": 1}, scheduler=sched, note="x"
    )
    model2, opt2, sched2 = make(seed=1)
    payload = load_checkpoint(path, model2, opt2, scheduler=sched2)
    assert (
        payload["step"] == 3 and payload["config"] == {"a": 1} and payload["extra"]["note"] == "x"
    )
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert sched2.last_epoch == sched.last_epoch
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_resume_continues_exactly(tmp_path):
    # 3 steps, save, 3 more == 3 steps, load into fresh objects (and restore RNG), 3 more
    model, opt, sched = make()
    for _ in range(3):
        step(model, opt, sched)
    save_checkpoint(tmp_path / "c.pt", model, opt, step=3, scheduler=sched)
    straight = [step(model, opt, sched) for _ in range(3)]

    from labkit.utils.seed import set_rng_state

    model2, opt2, sched2 = make(seed=9)
    payload = load_checkpoint(tmp_path / "c.pt", model2, opt2, scheduler=sched2)
    set_rng_state(payload["rng"])
    resumed = [step(model2, opt2, sched2) for _ in range(3)]
    assert resumed == straight


def test_loads_with_weights_only(tmp_path):
    model, opt, sched = make()
    save_checkpoint(
        tmp_path / "c.pt",
        model,
        opt,
        step=1,
        config={"nested": {"k": [1, 2.5, "s"]}},
        scheduler=sched,
    )
    payload = torch.load(tmp_path / "c.pt", weights_only=True)  # raises if anything is pickled
    assert payload["config"]["nested"]["k"] == [1, 2.5, "s"]


def test_atomic_write_leaves_old_file_when_save_fails(tmp_path, monkeypatch):
    model, opt, _ = make()
    path = save_checkpoint(tmp_path / "c.pt", model, opt, step=1)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, opt, step=2)
    assert path.read_bytes() == before  # the old checkpoint is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_truncated_checkpoint_raises_clear_error(tmp_path):
    model, opt, _ = make()
    path = save_checkpoint(tmp_path / "c.pt", model, opt, step=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c\.pt' is truncated or corrupt"):
        load_checkpoint(path, make()[0])


@pytest.mark.parametrize("seed", range(20))
def test_garbage_file_raises_clear_error(tmp_path, seed):
    # random bytes fail in many different ways inside torch.load (zip, pickle, index errors)
    path = tmp_path / "c.pt"
    path.write_bytes(random.Random(seed).randbytes(300))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path, make()[0])


def test_missing_file_raises_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt", make()[0])


def test_foreign_torch_file_is_rejected(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a labkit checkpoint"):
        load_checkpoint(tmp_path / "other.pt", make()[0])


def test_mismatched_model_names_the_problem(tmp_path):
    model, opt, _ = make()
    save_checkpoint(tmp_path / "c.pt", model, opt)
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(CheckpointError, match=r"shape mismatches .*0\.weight"):
        load_checkpoint(tmp_path / "c.pt", other)


def test_keep_last_prunes_oldest(tmp_path):
    model, opt, _ = make()
    for s in (10, 20, 30, 40):
        save_checkpoint(tmp_path / checkpoint_name(s), model, opt, step=s, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        checkpoint_name(30),
        checkpoint_name(40),
    ]
    assert latest_checkpoint(tmp_path) == tmp_path / checkpoint_name(40)


def test_latest_checkpoint_of_empty_folder_says_what_to_pass(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint"):
        latest_checkpoint(tmp_path)


class _Payload:
    """Stands for a foreign object: unpickling it would import a class and could run code."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_malicious_pickle_is_refused_with_a_safe_message(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(), "format_version": 1}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "not a labkit checkpoint" in message and "Never load" in message
    assert "truncated" not in message and "will likely succeed" not in message
    assert "this must never run" not in capsys.readouterr().out
