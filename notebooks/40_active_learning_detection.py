# ---
# jupyter:
#   kernelspec:
#     display_name: Python (labkit)
#     language: python
#     name: labkit
# ---

# %% [markdown]
# # P40 — Which frames are worth labelling? Active learning for a detector
#
# A robot logs thousands of frames a day; someone has to draw boxes on the few that get
# labelled. Most frames are boring (an empty corridor, the same parked car), a few hold what the
# detector gets wrong. **Active learning** lets the detector choose: train on what is labelled,
# score the unlabelled frames by how unsure the model is, label the top K, retrain, repeat.
# The question of this phase, measured honestly: **at the same number of labelled frames, does
# choosing by uncertainty beat choosing at random by more than the seed-to-seed spread?**
#
# **Objective.** Compute entropy, margin and least confidence of a detection by hand and say
# how a sigmoid score becomes a distribution; say what max / mean / sum aggregation favour and
# how a frame without detections is scored; explain why MC dropout needs boxes matched across
# passes; read a label-efficiency curve with its seed band and its area; name four situations
# in which active learning does not beat random.
#
# **Done when** (ROADMAP.md, P40) — check with `python -m labkit.done p40`:
# - at the same label budget, an uncertainty selector's area under the mAP@0.5-vs-labels curve
#   beats random's by more than 2 × the standard deviation of random's area over 3 seeds
#   (the paired per-seed differences are printed beside it);
# - every selection holds K distinct pool ids, none labelled before (and k > pool, k = 0, tied
#   scores behave);
# - the loop is resumable between rounds (`tests/test_active_loop.py`: a killed comparison
#   continues to the same result).
#
# **Run time** ("Run all", defaults; one torch thread, the lab's shared 2-core machine): 3 min
# 13 s measured with papermill with no earlier runs at load ≈ 1.5, 4 min 18 s at load ≈ 4.5
# (the other core busy): there 80 s the demo round's training and its MC-dropout passes, 150 s
# the short comparison of section 6 (random vs entropy, 3 seeds, 2 rounds of 60 steps;
# defaults trimmed from 200 demo steps and 80-step rounds, which took 5 min 7 s). When section
# 6 loads a finished full run (below) or reuses an earlier short comparison made with the same
# settings: about 2 minutes (128 s measured at load ≈ 3). Smoke setting (`LABKIT_SMOKE=1`, what `make test` runs): 14 s.
# GTX 1060: not measured (the models are small; the CPU is the reference).
#
# **Every "Run all" is fresh**: it writes into a new `runs/p40_active_notebook/<time>_notebook_s<seed>/`;
# a short comparison is reused from an earlier folder only when its settings match exactly (the
# output names the folder), and the parameters are checked before anything runs.
#
# **Reference numbers** — see "Reference numbers" at the end (measured on the lab's CPU).
#
# **The full run.** `python -m labkit.train p40_active` compares five selectors over 3 seeds
# (about 30 CPU-minutes; resumable with `--resume runs/p40_active/<run>`); section 6 loads the
# newest finished one from `runs/p40_active/` and otherwise runs a short comparison here.
#
# | piece | where it lives |
# |---|---|
# | the skewed pool (mostly empty frames, a rare class, bursts of near-duplicates) | `labkit.active.pool` |
# | entropy, margin, least confidence; max / mean / sum per image; empty frames | `labkit.active.uncertainty` |
# | MC dropout on P10's detector, matching boxes across passes | `labkit.active.mc_dropout` |
# | one inference over the pool (detections, top cell, features) | `labkit.active.inference` |
# | random, entropy, margin, MC dropout, diversity-aware top-K | `labkit.active.selectors` |
# | who labels: the ground truth, or a person (`to_label.json` / `labels.json`) | `labkit.active.labelling` |
# | the loop: train → evaluate → infer → select → label, resumable | `labkit.active.loop` |
# | curves, AUC, labels saved, the gap test | `labkit.active.curves` |
# | the whole comparison (build the pool and held-out set, run, resume) | `labkit.active.task` |
# | the comparison's files (curves.json, curves.png), read back | `labkit.active.report` |
# | the "done when" checks | `labkit.active.done` |
#
# Rerun with other parameters: `make rerun NB=40_active_learning_detection PARAMS="-p demo_steps 300"`.

# %% tags=["parameters"]
smoke = False  # True: the tiny setting `make test` uses (set LABKIT_SMOKE=1 for the same)
seed = 0
full_run = "auto"  # "auto": newest finished runs/p40_active/* run; "none": run the short one; or a folder
demo_steps = 150  # training steps of the model whose choices sections 4-7 show
short_steps = 60  # steps per round of the short comparison (when no finished full run exists)
short_seeds = [0, 1, 2]
short_rounds = 2
mc_passes = 4

# %%
import dataclasses
import inspect
import logging
import os
import tempfile
import time
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

import labkit
from labkit.active.curves import plot_curves
from labkit.active.labelling import SimulatedLabeller
from labkit.active.loop import initial_ids, round_seed, train_round
from labkit.active.mc_dropout import MCDropoutDetector, cluster_disagreement, match_passes
from labkit.active.pool import POOL_KINDS, SkewedShapesPool
from labkit.active.report import load_comparison
from labkit.active.selectors import ScoringContext, greedy_diverse_top_k, make_selector, top_k
from labkit.active.task import build, build_pool, run
from labkit.active.uncertainty import (
    detection_uncertainty,
    entropy,
    image_uncertainty,
    least_confidence,
    margin,
)
from labkit.detection.evaluate import evaluate_detector
from labkit.utils.claims import claim
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.exercise import Case, check_exercise
from labkit.utils.notebook import (
    Param,
    check_parameters,
    matching_run,
    notebook_run_dir,
    save_settings,
)

check_parameters(  # papermill's -p values, checked before anything runs: one clear message
    dict(smoke=smoke, seed=seed, full_run=full_run, demo_steps=demo_steps, short_steps=short_steps,
         short_seeds=short_seeds, short_rounds=short_rounds, mc_passes=mc_passes),
    dict(smoke=Param(bool), seed=Param(int, low=0, high=2**32 - 1),
         full_run=Param(str, choices=("auto", "none"), other="a finished p40_active run folder"),
         demo_steps=Param(int, low=1), short_steps=Param(int, low=1),
         short_seeds=Param(list, item=int, low=0, min_len=2),  # a spread needs two seeds
         short_rounds=Param(int, low=1), mc_passes=Param(int, low=2)),  # disagreement: 2 passes
)  # fmt: skip
smoke = smoke or os.environ.get("LABKIT_SMOKE") == "1"
ROOT = Path(labkit.__file__).resolve().parents[1]
NOTEBOOK_RUNS = Path(tempfile.mkdtemp()) if smoke else ROOT / "runs" / "p40_active_notebook"
RUNS = notebook_run_dir(NOTEBOOK_RUNS.name, seed, root=NOTEBOOK_RUNS.parent)  # fresh every Run all
device = torch.device("cpu")  # small models: one CPU thread is as fast per round as a GPU
torch.set_num_threads(1)
logging.getLogger("labkit").setLevel(logging.WARNING)  # the trainer's per-round INFO lines
cfg = apply_overrides(load_config("p40_active"), ["device=cpu", f"seed={seed}"])
if smoke:
    demo_steps, short_steps, short_seeds, short_rounds, mc_passes = 3, 2, [0, 1], 1, 2
    cfg = apply_overrides(cfg, [
        "data.image_size=32", "data.val_images=8", "model.head_channels=16",
        "active.pool.num_images=48", "active.initial_labelled=8", "active.k=6",
        "optim.warmup_steps=1",
    ])  # fmt: skip
active = cfg["active"]
K = active["k"]
print(f"smoke={smoke}, runs in {RUNS}, pool {active['pool']['num_images']} frames, K={K}")
started = time.perf_counter()


def thumbnails(ids, pool, titles, ncols=8, size=1.3, suptitle=None):
    """Pool frames ``ids`` in a grid, each titled; the title's colour is the frame's kind."""
    colours = {"empty": "grey", "common": "tab:blue", "rare": "tab:red"}
    nrows = max(1, -(-len(ids) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i, title in zip(axes.flat, ids, titles, strict=False):
        ax.imshow(pool[i][0].permute(1, 2, 0))
        ax.set_title(title, fontsize=7, color=colours[pool.source.kinds[i]])
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    display(fig)  # shown where the helper is called
    plt.close(fig)


def composition(ids, pool):
    return ", ".join(f"{n} {kind}" for kind, n in pool.source.composition(ids).items())


# %% [markdown]
# ## 1. The loop
# Pool-based active learning, as `labkit.active.loop.run_loop` runs it. Every round the
# detector is **retrained from scratch** on the labelled frames, with the same seed and the same
# number of steps for every selector: then round r's mAP depends on the labelled set only, and
# two selectors compare at equal labels *and* equal training (a warm-started model would carry
# its selection history in its weights; `active.warm_start: true` exists to show it).

# %%
fig, ax = plt.subplots(figsize=(9.5, 3.8))
ax.set(xlim=(0, 10.6), ylim=(0, 4.4)), ax.axis("off")
boxes = {
    "labelled": (0.2, 2.5, f"labelled set L\n({active['initial_labelled']} random to start)"),
    "train": (2.9, 2.5, "1. train the detector\nfrom scratch on L"),
    "eval": (5.6, 2.5, "2. evaluate: mAP@0.5,\nprecision, recall"),
    "infer": (5.6, 0.4, "3. infer on the\nunlabelled pool U"),
    "select": (2.9, 0.4, "4. score, select\nthe top K of U"),
    "label": (0.2, 0.4, "5. label them (truth or\na person): L += K"),
    "log": (8.3, 2.5, "log: labelled count,\nmAP, chosen ids"),
}
for x, y, text in boxes.values():
    ax.add_patch(FancyBboxPatch((x, y), 2.1, 1.1, boxstyle="round,pad=0.05", fc="#eef3fb", ec="#4a6fa5"))
    ax.text(x + 1.05, y + 0.55, text, ha="center", va="center", fontsize=8)
for a, b in [("labelled", "train"), ("train", "eval"), ("eval", "log"), ("train", "infer"),
             ("infer", "select"), ("select", "label"), ("label", "labelled")]:  # fmt: skip
    (xa, ya, _), (xb, yb, _) = boxes[a], boxes[b]
    start, end = (xa + 1.05, ya + 0.55), (xb + 1.05, yb + 0.55)
    if ya == yb:  # side by side: from the right edge to the left edge (or back)
        start = (xa + (2.15 if xb > xa else -0.05), ya + 0.55)
        end = (xb + (-0.05 if xb > xa else 2.15), yb + 0.55)
    else:  # above each other
        start, end = (start[0], ya + (-0.05 if yb < ya else 1.15)), (end[0], yb + (1.15 if yb < ya else -0.05))
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="#4a6fa5"))
ax.text(5.3, 4.05, "R rounds: the same pool, the same L_0, the same training for every selector",
        ha="center", fontsize=8, style="italic")  # fmt: skip
plt.show()

# %% [markdown]
# ## 2. The pool: a log where most frames are boring
# `SkewedShapesPool` builds a log from P10's shapes: 75% of the scenes are **empty**
# (background only), 17% **common** (one or two circles), 8% **rare** (up to three objects of
# all three classes: the only frames with squares and triangles). Each scene is recorded
# **3 times in a row**, the copies differing only by sensor noise and exposure: near-duplicates,
# as consecutive frames of a real log are. The held-out test set is P10's balanced shapes set —
# what we want is a detector that finds every class, and mAP averages over the three classes.

# %%
setup = build(cfg, device)  # the pool and P10's held-out set, shared by every round below
pool = setup.pool
print(f"{len(pool)} frames: {composition(range(len(pool)), pool)}")
print(inspect.getsource(SkewedShapesPool.__getitem__))
first = {kind: next(i for i, k in enumerate(pool.source.kinds) if k == kind and i % 3 == 0) for kind in POOL_KINDS}
shown = [first[kind] + c for kind in POOL_KINDS for c in range(3)]
thumbnails(shown, pool, [f"#{i} {pool.source.kinds[i]}" for i in shown], ncols=9,
           suptitle="one scene of each kind, three frames each (grey: empty, blue: common, red: rare)")  # fmt: skip

# %% [markdown]
# ## 3. Scores: how unsure is the detector about a frame?
# P10's detector has one sigmoid per class, no softmax: a detection of class c with score $p$
# answers "is there a c here?", so its distribution is $[p, 1-p]$ (`binary`). For a
# distribution $q$ over $K$ outcomes, sorted $q_{(1)} \ge q_{(2)} \ge \dots$ (higher =
# more uncertain, 0 for a one-hot $q$):
#
# * entropy $H(q) = -\sum_k q_k \log q_k$ — maximal ($\log K$) for uniform $q$;
# * margin $1 - (q_{(1)} - q_{(2)})$ — 1 when the two best tie;
# * least confidence $1 - q_{(1)}$.
#
# For $[p, 1-p]$ all three peak at $p = 0.5$ and are functions of $|p - 0.5|$ alone, so they
# rank single detections identically — and with `max` aggregation they pick *exactly the same
# frames* (in the full comparison, entropy's and margin's curves coincide). They differ in
# shape, which matters once several detections are summed or averaged into one image score: `max` (the most doubtful detection), `mean` (all detections doubtful: sparse frames
# with one borderline box win), `sum` (grows with the count: crowded frames win).
# **A frame with no detection** is scored as if its most object-like cell (the highest class
# probability before the threshold, `p_max`) were a detection: a frame the model confidently
# calls empty scores near 0, one where something almost fired scores higher.

# %%
p = torch.linspace(0, 1, 201)
plt.figure(figsize=(5, 3))
for kind in ("entropy", "margin", "least_confidence"):
    plt.plot(p, detection_uncertainty(p, kind), label=kind)
plt.xlabel("detection score p"), plt.ylabel("uncertainty of [p, 1 - p]"), plt.legend(fontsize=8)
plt.title("three scores of one sigmoid detection", fontsize=10)
plt.show()
for function in (entropy, margin, least_confidence):
    print(inspect.getsource(function))
order = torch.argsort((p - 0.5).abs(), stable=True)  # from the most doubtful score outwards
ranked = [detection_uncertainty(p, kind)[order].diff().max().item() for kind in ("entropy", "margin", "least_confidence")]
claim("for [p, 1 - p] all three scores peak at p = 0.5 and fall with |p - 0.5| alone",
      max(ranked) <= 1e-6 and all(detection_uncertainty(torch.tensor([0.5]), k).item()
                                 == detection_uncertainty(p, k).max().item()
                                 for k in ("entropy", "margin", "least_confidence")),
      f"largest rise along |p - 0.5|: {max(ranked):.1e}")  # fmt: skip

detections = {"one doubtful box": [0.5], "one doubtful among confident": [0.5, 0.97, 0.98, 0.99],
              "crowded, fairly sure": [0.8] * 6, "nothing detected (p_max 0.03)": []}  # fmt: skip
print(f"{'frame':32s} {'max':>6s} {'mean':>6s} {'sum':>6s}")
for name, scores in detections.items():
    row = [image_uncertainty(torch.tensor(scores, dtype=torch.float64), 0.03, "entropy", how) for how in ("max", "mean", "sum")]
    print(f"{name:32s} " + " ".join(f"{v:6.3f}" for v in row))


# %% [markdown]
# ### Exercise 1: entropy of a batch of distributions
# Write `my_entropy(probs [..., K]) -> [...]` in nats, with $0 \log 0 = 0$ (a one-hot row must
# give 0, not nan). Hint: `torch.special.xlogy(x, y)` is $x \log y$ and 0 where $x = 0$.
# Delete the line that binds the reference to check yours; until you write it, the checker says
# "not implemented yet" and the notebook goes on.


# %%
def my_entropy(probs):
    ...  # your code


def random_distributions(trial_seed):
    g = torch.Generator().manual_seed(trial_seed)
    return (torch.softmax(3 * torch.randn(5, 4, generator=g), dim=-1),)


entropy_cases = [
    Case((torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),), "one-hot rows: 0 log 0 = 0"),
    Case((torch.full((2, 4), 0.25),), "uniform: log K"),
    Case((torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64),), "float64, K = 2"),
]
my_entropy = entropy  # delete this line to check your own
passed = check_exercise(
    my_entropy,
    entropy,
    random_distributions,
    cases=entropy_cases,
    expects="my_entropy(probs [..., K]) -> entropy in nats [...], in the dtype of probs",
)

# %% [markdown]
# ## 4. One round: what each selector picks
# Train a detector on the seed's initial frames (the same `train_round` the loop runs),
# then let every selector pick K of the unlabelled frames. Titles show each frame's id and
# score; the colour is the frame's kind (grey empty, blue common, red rare) — the selector does
# not see it. Random picks what the log holds: mostly empty frames; every uncertainty selector
# picks fewer empty frames than random.

# %%
demo_cfg = apply_overrides(cfg, [f"trainer.max_steps={demo_steps}", f"active.mc_passes={mc_passes}"])
labeller = SimulatedLabeller(pool)
start_ids = initial_ids(len(pool), active["initial_labelled"], seed)
demo = dataclasses.replace(setup, cfg=demo_cfg)  # the same pool and held-out set, fewer steps
model, _ = train_round(demo, start_ids, labeller.targets(start_ids), round_seed(seed, 0))
scores0 = evaluate_detector(model, setup.heldout, device, setup.num_classes, setup.class_names, cfg["eval"])
print(f"trained on {len(start_ids)} frames ({composition(start_ids, pool)}): "
      f"held-out mAP@0.5 {scores0['map50']:.3f}")  # fmt: skip
unlabelled = [i for i in range(len(pool)) if i not in set(start_ids)]
context = ScoringContext(
    model, pool, device, {"score_thresh": active["score_thresh"], "batch_size": 100}, seed=seed
)
picks, pick_scores = {}, {}
for name in ("random", "entropy", "margin", "mc_dropout", "diverse_entropy"):
    selector = make_selector(name, demo_cfg["active"])
    picks[name] = selector.select(context, unlabelled, K, torch.Generator().manual_seed(seed))
    scores = selector.scores(context, unlabelled)
    by_id = dict(zip(unlabelled, scores.tolist(), strict=True)) if scores is not None else {}
    pick_scores[name] = [by_id.get(i) for i in picks[name]]
    print(f"{name:16s} picks {composition(picks[name], pool)}; "
          f"{len({pool.source.scenes[i] for i in picks[name]})} distinct scenes")  # fmt: skip
empties = {name: pool.source.composition(ids)["empty"] for name, ids in picks.items()}
claim("random picks mostly empty frames", empties["random"] > K / 2, f"{empties['random']} of {K}", smoke=smoke)
claim("every uncertainty selector picks fewer empty frames than random",
      max(v for n, v in empties.items() if n != "random") < empties["random"],
      ", ".join(f"{n} {v}" for n, v in empties.items()), smoke=smoke)  # fmt: skip
for name in ("random", "entropy", "mc_dropout", "diverse_entropy"):
    shown = picks[name][:16]
    titles = [f"#{i}" + ("" if s is None else f" {s:.2f}") for i, s in zip(shown, pick_scores[name], strict=False)]
    thumbnails(shown, pool, titles, suptitle=f"{name}: its first 16 of {K} picks")

# %% [markdown]
# ## 5. MC dropout: disagreement between passes
# `MCDropoutDetector` wraps P10's detector (its code unchanged) and drops features where the
# head's tower hands them to the class and box convolutions; every selector's detector trains
# with this dropout, and MC dropout keeps it on at inference for T passes. The passes return
# different box lists, so "the same object" must first be found in each: greedy matching by
# IoU, per class (`match_passes`). Per object, the disagreement is the mutual information
# $H(\bar p) - \overline{H(p_t)}$ (BALD: 0 when all passes say the same, however unsure)
# plus $\bar p \cdot (1 - \overline{\mathrm{IoU}})$: boxes that wander matter in proportion to
# how much the object is believed in. Without the $\bar p$ weight, the wobbling boxes of
# 0.06-score flickers on empty frames win — the last lines below count what each version picks.

# %%
print(inspect.getsource(MCDropoutDetector.forward))
frame = picks["mc_dropout"][0]
runs = context.mc_outputs(unlabelled, mc_passes)
row = unlabelled.index(frame)
clusters = match_passes([r.preds[row] for r in runs], demo_cfg["active"]["mc_match_iou"])
print(f"frame #{frame} ({pool.source.kinds[frame]}): {len(clusters)} objects over {mc_passes} passes")
for c in clusters[:5]:
    print(f"  {setup.class_names[c['label']]:8s} scores per pass {[round(s, 2) for s in c['scores'].tolist()]}"
          f"  IoUs {[round(s, 2) for s in c['ious'].tolist()]}"
          f"  -> disagreement {float(cluster_disagreement(c['scores'], c['ious'])):.3f}")  # fmt: skip


def unweighted_box_disagreement(i):
    """The tempting version: BALD + (1 - mean IoU), whatever the object's score."""
    objects = match_passes([r.preds[i] for r in runs], demo_cfg["active"]["mc_match_iou"])
    values = [float(cluster_disagreement(c["scores"])) + float(1 - c["ious"][c["scores"] > 0].mean()) for c in objects]
    return max(values, default=0.0)


unweighted = top_k(torch.tensor([unweighted_box_disagreement(i) for i in range(len(unlabelled))]), unlabelled, K)
print(f"MC dropout picks, box term weighted by the score: {composition(picks['mc_dropout'], pool)}")
print(f"MC dropout picks, unweighted box term:            {composition(unweighted, pool)}")
unweighted_empty = pool.source.composition(unweighted)["empty"]
claim("without the p̄ weight, MC dropout picks more empty frames", unweighted_empty > empties["mc_dropout"],
      f"{unweighted_empty} vs {empties['mc_dropout']} of {K}", smoke=smoke)  # fmt: skip


# %% [markdown]
# ### Exercise 2: top-K selection with deterministic ties
# Write `my_top_k(scores [N], pool_ids, k) -> list of ids`: the `min(k, N)` ids with the highest
# scores, best first, a tie going to the smaller id (so that a selection never depends on the
# order of the pool). Checked against `labkit.active.selectors.top_k` on scores full of ties.
# Delete the line that binds the reference to check yours.


# %%
def my_top_k(scores, pool_ids, k):
    raise NotImplementedError  # your code


def tied_scores(trial_seed):
    g = torch.Generator().manual_seed(trial_seed)
    pool_ids = torch.randperm(50, generator=g)[:20].tolist()
    scores = torch.randint(0, 5, (20,), generator=g).float() / 4  # many ties
    return scores, pool_ids, 7


top_k_cases = [
    Case((torch.zeros(4), [9, 2, 5, 1], 3), "all tied: smallest ids first"),
    Case((torch.tensor([0.2, 0.9, 0.5]), [4, 8, 6], 10), "k larger than the pool"),
    Case((torch.tensor([0.2, 0.9, 0.5]), [4, 8, 6], 0), "k = 0"),
]
my_top_k = top_k  # delete this line to check your own
passed = check_exercise(
    my_top_k,
    top_k,
    tied_scores,
    cases=top_k_cases,
    expects="my_top_k(scores [N], pool_ids (N ints), k) -> list of min(k, N) ids, best first",
)

# %% [markdown]
# ## 6. The comparison: label-efficiency curves
# Every selector, 3 seeds, the same budget: mAP@0.5 on the held-out set against the number of
# labelled frames, mean ± std over seeds, and the area under each curve (AUC, divided by the
# budget span: the mean mAP over the budget). A selector beats random when its mean AUC exceeds
# random's by more than 2 × the std of random's AUC over seeds — and entropy does, in the short
# comparison as in the full one, on every seed. The numbers come from the
# newest finished `python -m labkit.train p40_active` run if there is one; otherwise a short
# comparison runs here (random vs entropy, fewer rounds and steps).

# %%
finished = sorted((ROOT / "runs" / "p40_active").glob("*/curves.json"))
if full_run not in ("auto", "none"):
    source = Path(full_run)
else:  # the smoke setting never picks up a full run: it checks the code path that runs one
    source = finished[-1].parent if finished and full_run == "auto" and not smoke else None
if source is not None:
    comparison = load_comparison(source)
    run_cfg = load_config(source / "config.yaml")
    print(f"loaded the finished run {source}")
else:
    run_cfg = apply_overrides(cfg, [
        "active.selectors=[random, entropy]", f"active.seeds={short_seeds}",
        f"active.rounds={short_rounds}", f"trainer.max_steps={short_steps}",
    ])  # fmt: skip
    cached = None if smoke else matching_run(NOTEBOOK_RUNS, run_cfg, "short")
    if cached is not None:  # an earlier Run all with exactly these settings: its result is this one
        comparison, source = load_comparison(cached), cached
        (RUNS / "reused.txt").write_text(f"section 6 reused {cached}: the same settings\n")
        print(f"reused the short comparison of {cached}: its settings match these exactly")
    else:
        source = RUNS / "short"  # a text bar over the rounds, saved finished by papermill too
        result = run(run_cfg, source, device, progress=not smoke)
        save_settings(source, run_cfg)  # only now: a cut run is never reused
        comparison = result.details
        print(f"no finished p40_active run: ran the short comparison in {source} "
              f"({result.summary['seconds']:.0f} s)")  # fmt: skip
print(comparison.table)
fig, ax = plt.subplots(figsize=(6.5, 4))
plot_curves(comparison.summary, ax=ax)
ax.set_ylabel("mAP@0.5 on the held-out set")
plt.show()
test = comparison.tests["entropy"]
claim("entropy's AUC beats random's by more than 2 × random's std", test["passed"],
      f"gap {test['gap']:+.3f} vs 2σ = {test['threshold']:.3f}", smoke=smoke)
claim("entropy beats random on every seed", test["wins"] == len(test["paired"]),
      f"{test['wins']}/{len(test['paired'])} seeds, paired {test['paired_mean']:+.3f}", smoke=smoke)

# %% [markdown]
# ### What did each selector pick, round by round?
# Move the sliders (in Jupyter) to see the frames a selector chose in a round, with their
# scores; below them, one fixed choice is drawn so that the output exists headless.

# %%
run_pool = pool if run_cfg["active"]["pool"] == active["pool"] else build_pool(run_cfg)


def show_round(selector="entropy", seed_index=0, round_index=0):
    names = sorted({name for name, _ in comparison.states})
    selector = selector if selector in names else names[-1]
    seeds = sorted({s for _, s in comparison.states})
    state = comparison.states[(selector, seeds[min(seed_index, len(seeds) - 1)])]
    entry = state.history[min(round_index, len(state.history) - 2)]
    ids, scores = entry["chosen"][:16], entry["scores"] or [None] * len(entry["chosen"])
    titles = [f"#{i}" + ("" if s is None else f" {s:.2f}") for i, s in zip(ids, scores, strict=False)]
    thumbnails(ids, run_pool, titles, suptitle=(
        f"{selector}, seed {state.seed}, round {entry['round']} (trained on {entry['labelled']} "
        f"frames, mAP {entry['eval/map50']:.3f}): picks {composition(entry['chosen'], run_pool)}"))  # fmt: skip


names = sorted({name for name, _ in comparison.states})
rounds_run = max(len(s.history) for s in comparison.states.values()) - 2
display(widgets.interactive(
    show_round,
    selector=widgets.Dropdown(options=names, value="entropy" if "entropy" in names else names[0]),
    seed_index=widgets.IntSlider(0, min=0, max=len({s for _, s in comparison.states}) - 1),
    round_index=widgets.IntSlider(0, min=0, max=max(rounds_run, 0)),
))  # fmt: skip
show_round("entropy", 0, 0)

# %% [markdown]
# ## 7. When active learning does not help
# Four ways it fails, each shown with the models above or a small extra run.
#
# **(a) Cold start.** Uncertainty is only as good as the model. Trained on 4 frames for a single
# step, the detector scores frames by noise and its "uncertain" frames are as boring as a random
# draw; a few more steps and it already tells frames with shapes from empty ones (even a weak
# detector fires more where there is contrast); the round-0 model (40 frames) labels no empty
# frame at all. The kinds of the 60 frames each model would label:

# %%
tiny_ids = start_ids[:4]
print(f"the pool:                       {composition(range(len(pool)), pool)}")
print(f"random:                         {composition(picks['random'], pool)}")
cold_unlabelled = [i for i in range(len(pool)) if i not in set(tiny_ids)]
for cold_steps in (1, 10) if not smoke else (1,):
    cold_cfg = apply_overrides(demo_cfg, [f"trainer.max_steps={cold_steps}"])
    cold = dataclasses.replace(setup, cfg=cold_cfg)
    cold_model, _ = train_round(cold, tiny_ids, labeller.targets(tiny_ids), round_seed(seed, 0))
    cold_context = ScoringContext(cold_model, pool, device, {"score_thresh": active["score_thresh"], "batch_size": 100})
    cold_pick = make_selector("entropy").select(cold_context, cold_unlabelled, K, None)
    print(f"entropy, 4 frames, {cold_steps:2d} step(s): {composition(cold_pick, pool)}")
    if cold_steps == 1:
        cold_empties = pool.source.composition(cold_pick)["empty"]
print(f"entropy, round-0 model:         {composition(picks['entropy'], pool)}")
claim("a 1-step cold-start model labels about as many empty frames as random (within 20 % of K)",
      abs(cold_empties - empties["random"]) <= 0.2 * K, f"{cold_empties} vs {empties['random']} of {K}",
      smoke=smoke)  # fmt: skip
claim("the round-0 model's entropy labels no empty frame", empties["entropy"] == 0,
      f"{empties['entropy']} of {K}", smoke=smoke)  # fmt: skip

# %% [markdown]
# **(b) Redundant top-K.** The most uncertain frame's burst copies are about as uncertain as it
# is: plain top-K spends labels on near-duplicates, which teach little more than one copy.
# `diverse_entropy` walks the same ranking but skips a frame closer (in pooled backbone
# features) than the 1% quantile of pairwise distances to one already taken (burst copies are
# closer than that; frames of different scenes almost never are).

# %%
for name in ("entropy", "diverse_entropy", "random"):
    scenes = [pool.source.scenes[i] for i in picks[name]]
    repeats = len(scenes) - len(set(scenes))
    print(f"{name:16s} {len(set(scenes)):3d} distinct scenes in {K} picks ({repeats} near-duplicates)")
features = context.outputs(unlabelled).features
scene = torch.tensor([pool.source.scenes[i] for i in unlabelled])
same = scene[:, None] == scene[None, :]  # [N, N]: two frames of one scene
distances = torch.cdist(features, features)
off = ~torch.eye(len(unlabelled), dtype=torch.bool)
print(f"feature distance, copies of one scene: {distances[same & off].median():.3f} (median), "
      f"different scenes: {distances[~same].median():.3f}")  # fmt: skip
print(inspect.getsource(greedy_diverse_top_k).split('"""')[-1])
repeats = {n: K - len({pool.source.scenes[i] for i in picks[n]}) for n in ("entropy", "diverse_entropy")}
claim("diverse_entropy labels fewer near-duplicates than plain entropy",
      repeats["diverse_entropy"] < repeats["entropy"], f"{repeats['diverse_entropy']} vs {repeats['entropy']}",
      smoke=smoke)  # fmt: skip
claim("copies of one scene lie closer in feature space than different scenes",
      distances[same & off].median() < distances[~same].median(),
      f"{distances[same & off].median():.3f} vs {distances[~same].median():.3f}", smoke=smoke)  # fmt: skip

# %% [markdown]
# **(c) Class imbalance: uncertainty does not seek the rare class by itself.** The selector
# can only find rare frames if the model is more unsure about them. Below, the entropy of every
# unlabelled frame by kind (round-0 model). Empty frames score low, so uncertainty skips them —
# that is where the whole gain over random comes from in this log. But rare frames score no
# higher than common ones (a model that has hardly seen a square is not "unsure" about it: it
# calls it background or a circle), so entropy labels circles and squares/triangles in about
# their proportion among non-empty frames (41 common, 19 rare of 60 at seed 0), and the rare
# classes stay the weak part of mAP. Rebalancing needs something else: class-aware scores,
# per-class quotas, or a person looking at the picks.

# %%
entropy_scores = make_selector("entropy").scores(context, unlabelled)
by_kind = {kind: [s for i, s in zip(unlabelled, entropy_scores.tolist(), strict=True) if pool.source.kinds[i] == kind] for kind in POOL_KINDS}
plt.figure(figsize=(5, 2.8))
plt.boxplot([by_kind[k] or [0.0] for k in POOL_KINDS], tick_labels=POOL_KINDS)
plt.ylabel("entropy (max over detections)"), plt.title("scores by kind of frame (round-0 model)", fontsize=10)
plt.show()
median = {k: float(torch.tensor(v).median()) if v else float("nan") for k, v in by_kind.items()}
print("median score by kind:", {k: round(v, 3) for k, v in median.items()})
claim("empty frames score lower than common ones", median["empty"] < median["common"],
      f"median {median['empty']:.3f} vs {median['common']:.3f}", smoke=smoke)
claim("rare frames score no higher than common ones (within 10 %)", median["rare"] <= 1.1 * median["common"],
      f"median {median['rare']:.3f} vs {median['common']:.3f}", smoke=smoke)  # fmt: skip

# %% [markdown]
# **(d) Miscalibrated scores.** Uncertainty scores read probabilities as if they were
# calibrated. Sharpen or soften every score by a temperature, $p' = \sigma(\mathrm{logit}(p) / T)$,
# and see how much of the top-K changes. With `max` aggregation of a score symmetric about
# $p = 0.5$, nothing changes (a temperature keeps the order of $|p - 0.5|$); with `sum` the
# choice moves: an over-confident model ($T < 1$) makes crowded frames of near-sure boxes count
# for little, an under-confident one ($T > 1$) lets every low-score box add up.

# %%
outputs = context.outputs(unlabelled)


def tempered_choice(temperature, how):
    def temper(p):
        return torch.sigmoid(torch.logit(p.double().clamp(1e-6, 1 - 1e-6)) / temperature)

    scores = torch.tensor([
        image_uncertainty(temper(pred["scores"]), float(temper(outputs.p_max[i])), "entropy", how)
        for i, pred in enumerate(outputs.preds)
    ])  # fmt: skip
    return set(top_k(scores, unlabelled, K))


kept = {}
for how in ("max", "sum"):
    calibrated = tempered_choice(1.0, how)
    kept[how] = overlaps = {t: len(tempered_choice(t, how) & calibrated) / K for t in (0.5, 2.0)}
    print(f"{how}: top-{K} kept under T=0.5: {overlaps[0.5]:.0%}, under T=2: {overlaps[2.0]:.0%}")
claim("with max aggregation a temperature changes nothing", min(kept["max"].values()) == 1.0,
      f"{min(kept['max'].values()):.0%} kept")
claim("with sum aggregation the choice moves", min(kept["sum"].values()) < 1.0,
      f"{min(kept['sum'].values()):.0%} kept", smoke=smoke)

# %% [markdown]
# ## Reference numbers (CPU, one torch thread, the lab's 2-core machine)
# `python -m labkit.train p40_active` — 5 selectors × 3 seeds, 40 → 220 labelled frames in 3
# rounds of 60, 300 steps a round, held-out mAP@0.5 on 200 balanced images: 26.5 CPU-minutes
# (38 min wall at ~70% of a core); trainings that two selectors share (entropy and margin) run
# once.
#
# | selector | AUC of mAP@0.5 (mean ± std, 3 seeds) | mAP@0.5 at 220 labels | labels to reach random's 0.124 |
# |---|---|---|---|
# | random | 0.108 ± 0.006 | 0.124 ± 0.024 | 220 |
# | entropy (= margin, = least confidence under `max`) | 0.185 ± 0.009 | 0.233 ± 0.014 | 69 |
# | MC dropout (8 passes) | 0.175 ± 0.014 | 0.240 ± 0.002 | 73 |
# | diverse entropy (1% quantile) | 0.219 ± 0.007 | 0.267 ± 0.002 | 61 |
#
# Every uncertainty selector beats random by 5-9 × random's AUC std (2σ = 0.012), on every seed.
# `python -m labkit.done p40` (random vs entropy, 40 → 160 labels): AUC 0.164 ± 0.013 vs
# 0.104 ± 0.001, gap +0.059, paired +0.059 ± 0.014, 3/3 seeds; 5.3 minutes (load ≈ 1). The absolute
# mAP is low — a ResNet18 from scratch on at most 220 frames of 64 px, most of them empty — and
# random's curve even dips: with a fixed number of steps, more empty frames dilute the few
# with objects. GTX 1060: not measured (one round is a few hundred steps of a tiny model).
#
# ## What to remember
# - Measure at equal labels and equal training, over seeds; a gap smaller than random's own
#   seed-to-seed spread is not a result.
# - Uncertainty sampling helps most when the log is skewed: it skips the boring frames that
#   random sampling labels in proportion.
# - Entropy, margin and least confidence agree on one binary detection; aggregation (max, mean,
#   sum) and the rule for frames without detections decide what an image score favours.
# - MC dropout needs matched boxes before it can measure disagreement; it costs T passes.
# - Top-K of any score repeats itself on near-duplicates; a diversity rule fixes that cheaply.
# - Cold starts, blind spots of a biased model and miscalibrated scores make uncertainty no
#   better than random — check the picks, not only the curve.

# %%
print(f"notebook ran in {time.perf_counter() - started:.0f} s (smoke={smoke})")
