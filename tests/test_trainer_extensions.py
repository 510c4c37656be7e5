"""What a new phase extends the trainer with: extra checkpointed state, an after-step hook, and
loaders without a length. Exact resume stays exact with all three."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from labkit.data.common import make_loader
from labkit.trainers.supervised_trainer import train
from labkit.utils.checkpoint import CheckpointError, read_checkpoint
from labkit.utils.seed import set_seed


class WeightAverage:
    """EMA-like: an exponential average of the model's weights, updated after every step."""

    def __init__(self, model: nn.Module, decay: float = 0.9):
        self.model, self.decay = model, decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.updates = 0

    def __call__(self, step, out, logger) -> None:  # the after_step hook
        for key, value in self.model.state_dict().items():
            self.shadow[key].mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
        self.updates += 1
        logger.log(step, {"train/shadow_norm": float(self.shadow["0.weight"].norm())})

    def state_dict(self) -> dict:
        return {"shadow": {k: v.clone() for k, v in self.shadow.items()}, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.updates = state["updates"]


class NoLength:
    """A loader wrapper without ``__len__`` (a stream), keeping the sampler for set_epoch."""

    def __init__(self, loader):
        self.loader, self.sampler = loader, loader.sampler

    def __iter__(self):
        return iter(self.loader)


def problem(stream: bool = False):
    set_seed(0)
    x = torch.randn(40, 5)  # 40 samples, batch 16, drop_last: 2 steps per epoch
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = make_loader(TensorDataset(x, y), batch_size=16, seed=0)
    return model, optimizer, NoLength(loader) if stream else loader


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def run(tmp, steps, stop_after=None, resume=None, stream=False):
    model, optimizer, loader = problem(stream)
    average = WeightAverage(model)
    result = train(
        model, optimizer, loader, ce, max_steps=stop_after or steps, run_dir=tmp,
        ckpt_every=stop_after or 0, resume_from=resume, progress=False, tensorboard=False,
        after_step=average, extra_state={"average": average},
    )  # fmt: skip
    return result, model, average


@pytest.mark.parametrize("stream", [False, True], ids=["loader", "no-length stream"])
def test_extra_state_and_hook_resume_exactly(tmp_path, stream):
    # 7 steps straight vs 3 (mid-epoch: epochs have 2 steps) + resume 4, with dropout on.
    straight, straight_model, straight_avg = run(tmp_path / "a", 7, stream=stream)
    first, _, first_avg = run(tmp_path / "b", 7, stop_after=3, stream=stream)
    assert first_avg.updates == 3
    saved = read_checkpoint(first.last_checkpoint)["extra"]
    assert saved["objects"]["average"]["updates"] == 3 and saved["position"] == [1, 1]
    second, split_model, split_avg = run(
        tmp_path / "b", 7, resume=first.last_checkpoint, stream=stream
    )
    assert straight.losses == first.losses + second.losses
    assert split_avg.updates == straight_avg.updates == 7  # restored, then 4 more updates
    for key, value in straight_avg.shadow.items():
        assert torch.equal(value, split_avg.shadow[key]), key
    for a, b in zip(straight_model.state_dict().values(), split_model.state_dict().values()):
        assert torch.equal(a, b)


def test_the_hook_logs_through_the_trainers_logger(tmp_path):
    run(tmp_path, 3)
    rows = (tmp_path / "metrics.jsonl").read_text()
    assert rows.count("train/shadow_norm") == 3


def test_missing_extra_state_in_a_checkpoint_is_a_clear_error(tmp_path):
    model, optimizer, loader = problem()
    result = train(model, optimizer, loader, ce, max_steps=2, run_dir=tmp_path, progress=False)
    model, optimizer, loader = problem()
    average = WeightAverage(model)
    with pytest.raises(CheckpointError, match="holds no average state"):
        train(
            model, optimizer, loader, ce, max_steps=4, resume_from=result.last_checkpoint,
            progress=False, extra_state={"average": average},
        )  # fmt: skip


def test_first_logged_loss_after_a_kill_and_resume_matches_a_straight_run(tmp_path):
    # Log every 2 steps, checkpoint every 3; the run dies during step 4 (as with kill -9), so the
    # window of rows for step 4 holds step 3's loss, saved in the step-3 checkpoint.
    def losses(history):
        return {row["step"]: row["train/loss"] for row in history if "train/loss" in row}

    def go(run_dir, resume=None, die_at=None):
        model, optimizer, loader = problem()

        def hook(step, out, logger):
            if step == die_at:
                raise KeyboardInterrupt  # killed before step 4's row is logged

        history = []
        try:
            train(
                model, optimizer, loader, ce, max_steps=8, run_dir=run_dir, ckpt_every=3,
                log_every=2, resume_from=resume, progress=False, tensorboard=False,
                after_step=hook,
            )  # fmt: skip
        except KeyboardInterrupt:
            pass
        history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return losses(history)

    straight = go(tmp_path / "a")
    go(tmp_path / "b", die_at=4)
    resumed = go(tmp_path / "b", resume=tmp_path / "b" / "checkpoints" / "step_00000003.pt")
    assert resumed == straight  # steps 2, 4, 6, 8: the same averages


def test_profile_memory_writes_perf_json(tmp_path):
    model, optimizer, loader = problem()
    train(model, optimizer, loader, ce, max_steps=3, run_dir=tmp_path, progress=False,
          tensorboard=False, profile_memory=True)  # fmt: skip
    perf = json.loads((tmp_path / "perf.json").read_text())
    assert perf["steps"] == 3 and perf["samples_per_process"] == 48 and perf["samples_per_s"] > 0
    assert perf["peak_memory_allocated_bytes"] is None  # the CPU: only CUDA reports a peak
