"""The recipe ablations' shared command line (labkit.utils.ablation): rows stamped with what made
them, merged into one JSON; and P10's ablation end to end on a tiny budget."""

import json

from labkit.detection import ablation as p10_ablation
from labkit.diffusion import ablation as p20_ablation
from labkit.utils.ablation import ablation_main


def fake_ablate(name, steps, eval_every, extra, runs_dir):
    final = {"score": len(name) + steps}
    return {"steps": steps, "train_cpu_seconds": 1.0, "final": final, "extra": extra}


def test_rows_are_stamped_and_merged(tmp_path, capsys):
    out = tmp_path / "ablation.json"
    recipes = {"a": [], "bb": ["x=1"]}
    run = dict(describe=lambda f: f"score {f['score']}", steps=5, eval_every=5, out=str(out))
    ablation_main("labkit.fake", recipes, fake_ablate, **run, description="d", argv=["a"])
    ablation_main(
        "labkit.fake", recipes, fake_ablate, **run, description="d",
        argv=["bb", "--steps", "7", "--set", "y=2"],
    )  # fmt: skip
    stored = json.loads(out.read_text())
    assert set(stored) == {"a", "bb"}  # the second call kept the first one's row
    assert stored["bb"]["command"] == (
        "OMP_NUM_THREADS=1 python -m labkit.fake bb --steps 7 --eval-every 5 --set y=2"
    )
    assert stored["bb"]["extra"] == ["y=2"] and stored["bb"]["final"] == {"score": 9}
    assert {"commit", "uncommitted", "torch", "load"} <= set(stored["a"])
    assert "bb: 7 steps, 1 CPU-s of training: score 9" in capsys.readouterr().out


def test_both_phases_describe_their_final_numbers():
    assert "recall 0.500" in p10_ablation.describe({"map50": 0.9, "precision": 0.8, "recall": 0.5})
    final = {"confident_share": 0.9, "label_accuracy": 0.95, "frechet": 40.0}
    assert "Fréchet 40" in p20_ablation.describe(final)


def test_p10_ablation_runs_a_tiny_recipe(tmp_path):
    out = tmp_path / "p10.json"
    p10_ablation.main(["new", "--steps", "2", "--eval-every", "2", "--out", str(out),
                       "--set", "data.val_images=4", "data.eval_batch_size=4"])  # fmt: skip
    row = json.loads(out.read_text())["new"]
    assert row["steps"] == 2 and row["curve"][-1]["step"] == 2
    assert 0.0 <= row["final"]["map50"] <= 1.0 and row["train_cpu_seconds"] > 0
