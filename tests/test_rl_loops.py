"""RL loops: checkpoints load with weights_only and resume exactly; a short DQN run learns."""

import pytest
import torch

from labkit.rl.config import with_defaults
from labkit.rl.plumbing import read_loop_checkpoint
from labkit.rl.task import resume_point, run
from labkit.utils.checkpoint import CheckpointError
from labkit.utils.config import ConfigError


def train_dqn(cfg: dict, run_dir=None, **kwargs) -> dict:
    return run({**cfg, "algo": "dqn"}, run_dir, torch.device("cpu"), **kwargs).details


def train_pg(cfg: dict, run_dir=None, **kwargs) -> dict:
    return run({**cfg, "algo": "pg"}, run_dir, torch.device("cpu"), **kwargs).details


# Small and fast: a few hundred steps, no evaluation during training.
DQN_TINY = {
    "seed": 0,
    "env": {"num_envs": 2},
    "trainer": {"max_env_steps": 400, "eval_every": 0, "log_every": 10, "ckpt_every": 200},
    "dqn": {"hidden": [32, 32], "learning_starts": 100,
            "batch_size": 32, "target_every": 50, "exploration_steps": 200},
    "eval": {"solve_episodes": 5},
}  # fmt: skip

PG_TINY = {
    "seed": 0,
    "trainer": {"max_episodes": 12, "eval_every": 0, "ckpt_every": 6},
    "pg": {"hidden": [16], "episodes_per_update": 2},
    "eval": {"solve_episodes": 5},
}


def _losses(summary: dict, after: int, prefix: str = "losses/") -> list[dict]:
    return [
        {k: v for k, v in row.items() if k.startswith(prefix) or k == "step"}
        for row in summary["metrics"]
        if row["step"] > after and any(k.startswith(prefix) for k in row)
    ]


def test_dqn_checkpoint_resume_is_exact(tmp_path):
    full = train_dqn(DQN_TINY, tmp_path / "full", progress=False)
    # One checkpoint when the step counter crosses 200, one at the end (two envs step together
    # and an autoreset step adds 0, so the counter may land on 201 or 401).
    checkpoints = sorted((tmp_path / "full" / "checkpoints").glob("step_*.pt"))
    assert len(checkpoints) == 2
    assert not list((tmp_path / "full" / "checkpoints").glob("*.tmp"))  # atomic writes

    mid = read_loop_checkpoint(checkpoints[0])  # weights_only=True inside: plain types only
    after = mid["step"]
    assert after in (200, 201) and len(mid["extra"]["replay"]["obs"]) == after
    assert mid["extra"]["state"]["env_steps"] == after and mid["extra"]["algo"] == "dqn"

    resumed = train_dqn(DQN_TINY, tmp_path / "resumed", resume_from=checkpoints[0], progress=False)
    expected, got = _losses(full, after), _losses(resumed, after)
    assert len(expected) >= 15 and got == expected  # identical TD losses, Q values, grad norms
    end_full = read_loop_checkpoint(checkpoints[1])
    end_resumed = read_loop_checkpoint(tmp_path / "resumed" / "checkpoints" / checkpoints[1].name)
    for name, tensor in end_full["model"].items():  # the online Q-network
        assert torch.equal(tensor, end_resumed["model"][name])
    assert resumed["episodes"] == full["episodes"]
    assert resumed["final_eval_mean_return"] == full["final_eval_mean_return"]


def test_pg_checkpoint_resume_is_exact(tmp_path):
    full = train_pg(PG_TINY, tmp_path / "full", progress=False)
    first = sorted((tmp_path / "full" / "checkpoints").glob("step_*.pt"))[0]
    mid = read_loop_checkpoint(first)
    assert mid["extra"]["state"]["episodes"] == 6

    resumed = train_pg(PG_TINY, tmp_path / "resumed", resume_from=first, progress=False)
    after = mid["step"]
    assert len(_losses(full, after)) == 3 and _losses(resumed, after) == _losses(full, after)
    assert resumed["env_steps"] == full["env_steps"]


@pytest.mark.parametrize("algo,stop_at", [("dqn", 200), ("pg", 6)])
def test_stop_after_then_resume_equals_a_straight_run(tmp_path, algo, stop_at):
    # stop_after counts the loop's budget unit (DQN: env steps, PG: episodes); the stopped run
    # saves like an interrupted one, and its run folder's resume point continues it exactly.
    tiny, train = (DQN_TINY, train_dqn) if algo == "dqn" else (PG_TINY, train_pg)
    tiny = {**tiny, "trainer": {**tiny["trainer"], "ckpt_every": 0}}  # only the stop's file
    straight = train(tiny, tmp_path / "straight", progress=False)
    part = train(tiny, tmp_path / "split", progress=False, stop_after=stop_at)
    assert part["stopped_by"] == "stop_after" and straight["stopped_by"] == "max_steps"
    point = resume_point(tmp_path / "split")
    assert point.step == part["env_steps"] and point.config["algo"] == algo
    rest = train(point.config, tmp_path / "split", progress=False, resume_from=point.resume_from)
    assert _losses(rest, point.step) == _losses(straight, point.step)
    assert rest["env_steps"] == straight["env_steps"] and rest["episodes"] == straight["episodes"]
    assert rest["final_eval_mean_return"] == straight["final_eval_mean_return"]


def test_resume_point_of_an_empty_folder_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError):
        resume_point(tmp_path)


def test_short_dqn_run_beats_a_random_policy():
    # A random CartPole policy averages ~22. A few thousand steps of DQN should clearly beat it.
    # The shipped p30_dqn config, cut to 3,000 env steps (about 1,000 updates, a few seconds).
    cfg = {"seed": 1, "trainer": {"max_env_steps": 3000, "eval_every": 1000}}
    summary = train_dqn(cfg, progress=False)
    assert summary["final_eval_mean_return"] > 60, summary["eval_history"]
    keys = set().union(*summary["metrics"])
    assert {"charts/episodic_return", "charts/epsilon", "losses/td_loss", "losses/q_values",
            "losses/grad_norm", "eval/mean_return"} <= keys  # fmt: skip


def test_run_folder_has_metrics_and_tensorboard(tmp_path):
    train_pg(
        {**PG_TINY, "trainer": {**PG_TINY["trainer"], "max_episodes": 2}}, tmp_path, progress=False
    )
    assert (tmp_path / "metrics.jsonl").stat().st_size > 0
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_unknown_config_key_fails_loudly():
    with pytest.raises(ConfigError, match="optim.lr"):
        with_defaults({"optim": {"lrr": 0.1}}, "p30_dqn")
    with pytest.raises(ConfigError, match="'pg.baseline' is 'mena'"):
        with_defaults({"pg": {"baseline": "mena"}}, "p30_pg")
    assert with_defaults({"seed": 5}, "p30_pg")["pg"]["baseline"] == "value"


def test_bad_checkpoints_raise_checkpoint_error(tmp_path):
    train_pg(
        {**PG_TINY, "trainer": {**PG_TINY["trainer"], "max_episodes": 2}}, tmp_path, progress=False
    )
    good = sorted((tmp_path / "checkpoints").glob("step_*.pt"))[-1]
    with pytest.raises(CheckpointError, match="No checkpoint at"):
        read_loop_checkpoint(tmp_path / "checkpoints" / "step_99999999.pt")
    truncated = tmp_path / "elsewhere" / "cut.pt"  # as if the disk filled up mid-copy
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_loop_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="written by the PG loop"):
        train_dqn({"trainer": {"max_env_steps": 10}}, resume_from=good, progress=False)
    wider = {**PG_TINY, "pg": {**PG_TINY["pg"], "hidden": [32]}}
    with pytest.raises(CheckpointError, match="actor-critic state does not fit"):
        train_pg(wider, resume_from=tmp_path, progress=False)  # a run folder: its newest file


def test_thread_count_is_left_alone_unless_asked():
    before = torch.get_num_threads()
    tiny = {**PG_TINY, "trainer": {**PG_TINY["trainer"], "max_episodes": 1}}
    train_pg({**tiny, "torch_threads": None}, progress=False)
    assert torch.get_num_threads() == before
    train_pg({**tiny, "torch_threads": 2}, progress=False)  # asked for: set, then restored
    assert torch.get_num_threads() == before


def test_a_run_that_solved_stays_solved_after_a_resume(tmp_path):
    # The step of the first confirmed solve lives in the loop state (saved in checkpoints), so
    # a later summary says solved even when a final evaluation dips below the threshold.
    from labkit.rl.plumbing import finish, new_loop_state
    from labkit.utils.logging import MetricsLogger

    cfg = with_defaults({"eval": {"solve_episodes": 3}}, "p30_dqn")
    state = {**new_loop_state(), "env_steps": 4000, "solved_at": 2000}

    def random_policy(obs):  # returns about 22 on CartPole: far below 475
        return torch.zeros(len(obs), dtype=torch.long)

    summary = finish(random_policy, cfg, state, MetricsLogger(None))
    assert summary["final_eval_mean_return"] < 475
    assert summary["solved"] and summary["solved_at_env_step"] == 2000
