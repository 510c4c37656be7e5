# %% [markdown]
# # P10 — A tiny object detector, every piece written out
#
# A one-stage, anchor-free detector (a truncated ResNet18 and a small conv head, FCOS-style
# targets, RetinaNet's focal loss) learns to find circles, squares and triangles in synthetic
# images. Every piece is a labkit function, tested against torchvision where torchvision has
# one; this notebook imports them rather than retyping them:
#
# | piece | where it lives |
# |---|---|
# | IoU, GIoU, DIoU | `labkit.detection.boxes` |
# | non-maximum suppression | `labkit.detection.nms` |
# | which grid cells learn which box; decoding | `labkit.detection.assign` |
# | focal loss, GIoU loss, the detector's loss | `labkit.detection.losses` |
# | the model | `labkit.detection.model.TinyDetector` |
# | VOC mAP, precision-recall curves | `labkit.detection.metrics` |
# | data (offline shapes, PASCAL VOC) | `labkit.detection.dataset` |
# | build, train, evaluate | `labkit.detection.task` |
#
# What you should be able to do afterwards: compute IoU and its variants by hand and say why
# GIoU/DIoU exist, run NMS in your head on a picture, explain which cells of the grid are
# positives, debug a detector with the overfit harness, and read mAP from a precision-recall
# curve.
#
# Headless equivalent: `python -m labkit.train p10_detection` (CPU) or `p10_voc` (GPU, VOC);
# `python -m labkit.done p10` checks the phase. Rerun with other parameters:
# `make rerun NB=10_detection_tiny PARAMS="-p train_steps 3000"`.

# %% tags=["parameters"]
smoke = False  # True: the tiny setting `make test` uses (set LABKIT_SMOKE=1 for the same)
seed = 0
image_size = 96  # shapes images are image_size x image_size; a multiple of the stride (8)
overfit_images = 16
overfit_steps = 100  # about 1 minute on one CPU thread
train_steps = 800  # the held-out run: about 3-4 minutes on one CPU thread
head_channels = 64

# %%
import inspect
import os
import tempfile
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torchvision
from IPython.display import display
from matplotlib.patches import Rectangle

import labkit
from labkit.detection.assign import assign_targets, decode_predictions
from labkit.detection.boxes import box_iou, distance_box_iou, generalized_box_iou
from labkit.detection.dataset import ShapesDataset, detection_collate, resize
from labkit.detection.evaluate import predict
from labkit.detection.metrics import mean_average_precision
from labkit.detection.nms import nms
from labkit.detection.task import run
from labkit.detection.visualize import draw_detections, prediction_grid
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.device import get_device
from labkit.utils.exercise import check_exercise

smoke = smoke or os.environ.get("LABKIT_SMOKE") == "1"
if smoke:
    image_size, overfit_images, overfit_steps, train_steps, head_channels = 64, 4, 20, 10, 16
ROOT = Path(labkit.__file__).resolve().parents[1]
RUNS = Path(tempfile.mkdtemp()) if smoke else ROOT / "runs" / "p10_detection_notebook"
device = get_device("auto")
torch.set_num_threads(1 if device.type == "cpu" else torch.get_num_threads())
print(f"device {device}, smoke={smoke}, runs in {RUNS}")


ZOOM = 3  # boxes are drawn on enlarged images, so that their labels stay readable


def zoomed(image, *box_dicts):
    """``image`` [3, H, W] and dicts holding "boxes", scaled by ZOOM (``resize`` scales boxes)."""
    size = (image.shape[-2] * ZOOM, image.shape[-1] * ZOOM)
    return resize(image, {"boxes": torch.zeros(0, 4)}, size)[0], *[
        resize(image, d, size)[1] for d in box_dicts
    ]


def show(image, title="", ax=None):
    """Show a [3, H, W] image (float in [0, 1] or uint8)."""
    ax = ax or plt.gca()
    ax.imshow(image.permute(1, 2, 0))
    ax.set_title(title, fontsize=9)
    ax.axis("off")


# %% [markdown]
# ## 1. The data: shapes with exact boxes
# `ShapesDataset` draws each image from a generator seeded with `(seed, index)`: no download,
# any size, and item *i* is the same image in every run. Boxes are xyxy in pixels with
# pixel-edge coordinates (a shape covering pixel columns 10..19 has `x1 = 10, x2 = 20`). The
# background has gradients, lines and noise so that colour alone cannot find the objects.

# %%
shapes = ShapesDataset(8, image_size=image_size, seed=seed)
images, targets = detection_collate([shapes[i] for i in range(8)])
print("images", tuple(images.shape), images.dtype, "| first target:", targets[0])
plt.figure(figsize=(10, 3))
show(prediction_grid(images, targets=targets, class_names=shapes.class_names, nrow=8))
plt.show()

# %% [markdown]
# ## 2. Overlap: IoU, GIoU, DIoU
# For boxes $A$ and $B$ with smallest enclosing box $C$:
#
# * $\mathrm{IoU} = |A \cap B| \,/\, |A \cup B|$, in $[0, 1]$: the detection metric. But it is
#   0 for *every* pair of disjoint boxes, near or far, so as a loss it gives no gradient
#   until the boxes touch.
# * $\mathrm{GIoU} = \mathrm{IoU} - |C \setminus (A \cup B)| \,/\, |C|$ (Rezatofighi et al. 2019),
#   in $[-1, 1]$: the empty part of the enclosing box penalises distance, so disjoint boxes
#   still feel a pull.
# * $\mathrm{DIoU} = \mathrm{IoU} - \rho^2 / c^2$ (Zheng et al. 2020), with $\rho$ the distance
#   of the centres and $c$ the diagonal of $C$: pulls the centres together directly, and keeps
#   pulling when one box sits inside the other (where GIoU's penalty is 0).
#
# Move box B with the sliders (in Jupyter) and watch the three numbers; the cell also draws one
# fixed position so that the output exists when the notebook runs headless.

# %%
box_a = torch.tensor([[20.0, 20.0, 60.0, 50.0]])  # xyxy


def show_ious(dx=30.0, dy=10.0, width=30.0):
    """Draw A and B = A's corner shifted by (dx, dy), width x 30 px; print IoU, GIoU, DIoU."""
    box_b = torch.tensor([[20.0 + dx, 20.0 + dy, 20.0 + dx + width, 50.0 + dy]])
    iou = box_iou(box_a, box_b).item()
    giou = generalized_box_iou(box_a, box_b).item()
    diou = distance_box_iou(box_a, box_b).item()
    fig, ax = plt.subplots(figsize=(3.5, 3))
    for box, colour, name in ((box_a[0], "tab:green", "A"), (box_b[0], "tab:red", "B")):
        x1, y1, x2, y2 = box.tolist()
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, lw=2))
        ax.text(x1 + 2, y1 + 6, name, color=colour)
    enclosing = torch.cat([torch.minimum(box_a, box_b)[0, :2], torch.maximum(box_a, box_b)[0, 2:]])
    x1, y1, x2, y2 = enclosing.tolist()
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="gray", ls="--"))
    ax.set(xlim=(0, 140), ylim=(110, 0), aspect="equal", title="A, B and enclosing box C")
    plt.show()
    print(f"IoU {iou:.3f}   GIoU {giou:.3f}   DIoU {diou:.3f}")


slider = dict(continuous_update=False)
display(
    widgets.interactive(
        show_ious,
        dx=widgets.FloatSlider(30.0, min=-20, max=100, step=2, **slider),
        dy=widgets.FloatSlider(10.0, min=-20, max=60, step=2, **slider),
        width=widgets.FloatSlider(30.0, min=4, max=60, step=2, **slider),
    )
)
show_ious(dx=60.0, dy=40.0)  # disjoint: IoU is 0, GIoU and DIoU still say "how far"

# %% [markdown]
# The numbers along one line: slide B to the right through A and beyond. IoU is flat at 0 once
# the boxes separate; GIoU and DIoU keep falling, which is the gradient a box loss needs.

# %%
shifts = torch.arange(-60.0, 100.0, 1.0)
slid = torch.stack([box_a[0] + torch.tensor([s, 0.0, s, 0.0]) for s in shifts])  # [S, 4]
plt.figure(figsize=(5, 3))
plt.plot(shifts, box_iou(box_a, slid)[0], label="IoU")
plt.plot(shifts, generalized_box_iou(box_a, slid)[0], label="GIoU")
plt.plot(shifts, distance_box_iou(box_a, slid)[0], label="DIoU")
plt.xlabel("horizontal shift of B (px); B = A at 0")
plt.legend()
plt.show()
print(inspect.getsource(box_iou))

# %% [markdown]
# ### Exercise: pairwise IoU
# Write `my_box_iou(boxes1 [N, 4], boxes2 [M, 4]) -> [N, M]` (xyxy). Hints: the intersection's
# top-left corner is the elementwise max of the top-left corners (broadcast `[N, 1, 2]` against
# `[1, M, 2]`), its bottom-right the min of the bottom-right corners; clamp its width and height
# at 0; union = area1 + area2 - intersection.


# %%
def my_box_iou(boxes1, boxes2): ...  # your code


my_box_iou = box_iou  # delete this line to check your own


def random_boxes(trial_seed):
    g = torch.Generator().manual_seed(trial_seed)

    def boxes(n):
        xy = torch.rand(n, 2, generator=g) * 100
        return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * 50], dim=1)

    return boxes(5), boxes(7)


passed = check_exercise(my_box_iou, box_iou, random_boxes)

# %% [markdown]
# ## 3. Non-maximum suppression, step by step
# A dense detector fires on many neighbouring cells for one object. Greedy NMS keeps the
# highest-scoring box, removes every box overlapping it by IoU > threshold, and repeats with
# the best remaining box. Below: noisy copies of each ground-truth box with random scores, as a
# detector would produce, before and after `labkit.detection.nms.nms` (same contract as
# `torchvision.ops.nms`).

# %%
g = torch.Generator().manual_seed(seed)
image, target = shapes[1]
copies = 5
noise = torch.randn(len(target["boxes"]) * copies, 4, generator=g) * image_size / 40
candidates = target["boxes"].repeat_interleave(copies, dim=0) + noise  # [K * copies, 4]
candidates[:, 2:] = torch.maximum(candidates[:, 2:], candidates[:, :2] + 2)  # keep x2 > x1
scores = torch.rand(len(candidates), generator=g)
labels = target["labels"].repeat_interleave(copies)
keep = nms(candidates, scores, iou_threshold=0.5)

fig, axes = plt.subplots(1, 2, figsize=(8, 4))
before = {"boxes": candidates, "scores": scores, "labels": labels}
after = {k: v[keep] for k, v in before.items()}
big, before_big, after_big = zoomed(image, before, after)
show(draw_detections(big, before_big, score_thresh=0, class_names=shapes.class_names),
     f"before NMS: {len(candidates)} boxes", axes[0])  # fmt: skip
show(draw_detections(big, after_big, score_thresh=0, class_names=shapes.class_names),
     f"after NMS (IoU > 0.5 suppressed): {len(keep)} boxes", axes[1])  # fmt: skip
plt.show()

# Why each box was kept or dropped, read off nms's answer: visiting boxes by decreasing score,
# every dropped box overlaps a box kept before it by more than the threshold.
iou = box_iou(candidates, candidates)  # [N, N]
for rank, i in enumerate(torch.argsort(scores, descending=True, stable=True).tolist()):
    if i in keep:
        print(f"{rank + 1:2d}. box {i:2d} score {scores[i]:.2f}: kept")
        continue
    earlier_kept = [j for j in keep.tolist() if scores[j] > scores[i]]
    j = max(earlier_kept, key=lambda k: iou[i, k].item())
    print(f"{rank + 1:2d}. box {i:2d} score {scores[i]:.2f}: dropped, IoU {iou[i, j]:.2f} "
          f"with kept box {j}")  # fmt: skip

# %% [markdown]
# ### Exercise: greedy NMS
# Write `my_nms(boxes [N, 4], scores [N], iou_threshold) -> kept indices [K]` (int64, by
# decreasing score), the greedy loop described above. It is checked against `labkit`'s `nms`, which
# `tests/test_detection_nms.py` checks against `torchvision.ops.nms`.


# %%
def my_nms(boxes, scores, iou_threshold): ...  # your code


my_nms = nms  # delete this line to check your own


def random_detections(trial_seed):
    g = torch.Generator().manual_seed(trial_seed)
    centres = torch.rand(40, 2, generator=g) * 60  # crowded, so that many boxes overlap
    sizes = 10 + torch.rand(40, 2, generator=g) * 20
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    return boxes, torch.rand(40, generator=g), 0.5


check_exercise(my_nms, nms, random_detections)
print("torchvision agrees:", torch.equal(nms(*random_detections(0)),
                                         torchvision.ops.nms(*random_detections(0))))  # fmt: skip

# %% [markdown]
# ## 4. Which cells learn which box
# The detector predicts, for each cell of a stride-8 grid, C class scores and the distances
# `(l, t, r, b)` from the cell centre to the four sides of a box. During training,
# `assign_targets` decides each cell's target:
#
# * a cell is **positive** for a box when its centre lies inside the box and within 1.5 strides
#   of the box centre (FCOS's centre sampling): those cells see the whole object;
# * a cell inside two candidate boxes takes the smaller one;
# * all other cells are **background**: their target is "no class" (the focal loss pushes their
#   scores down) and they have no box to regress.
#
# Coloured cells below are positives, coloured by the class they learn; dots are cell centres.

# %%
stride = 8
image, target = shapes[2]
grid = (image_size // stride, image_size // stride)
cls_target, box_target = assign_targets(target["boxes"], target["labels"], grid, stride, 3)
colours = ["tab:blue", "tab:orange", "tab:purple"]
fig, ax = plt.subplots(figsize=(5, 5))
big, target_big = zoomed(image, target)
show(draw_detections(big, target=target_big, class_names=shapes.class_names), ax=ax)
cell_px = stride * ZOOM  # one cell on the enlarged image
for cell in range(grid[0] * grid[1]):
    i, j = divmod(cell, grid[1])  # row-major: cell (i, j) is index i * W + j
    ax.plot((j + 0.5) * cell_px, (i + 0.5) * cell_px, ".", color="white", ms=2)
    if cls_target[cell] < 3:
        colour = colours[int(cls_target[cell])]
        ax.add_patch(
            Rectangle((j * cell_px, i * cell_px), cell_px, cell_px, color=colour, alpha=0.5)
        )
ax.set_title(f"{int((cls_target < 3).sum())} positive cells of {grid[0] * grid[1]}", fontsize=9)
plt.show()

# %% [markdown]
# ## 5. Training: the overfit harness first
# A new detector has many ways to be silently wrong (boxes in the wrong format, targets on the
# wrong cells, a loss that ignores positives). Before a real run, train on a fixed handful of
# images with no augmentation and evaluate **on the same images**: a correct pipeline drives
# mAP@0.5 to ~1 within a hundred steps. `run` is the same function `python -m labkit.train` and
# `python -m labkit.done p10` call; `trainer.overfit=N` switches the harness on.

# %%
cfg = apply_overrides(
    load_config("p10_detection"),
    [f"seed={seed}", f"data.image_size={image_size}", f"model.head_channels={head_channels}"],
)
overfit_cfg = apply_overrides(
    cfg,
    [
        f"trainer.overfit={overfit_images}",
        f"data.batch_size={overfit_images}",
        f"trainer.max_steps={overfit_steps}",
        f"trainer.eval_every={max(overfit_steps // 4, 1)}",
    ],
)
overfit_run = run(overfit_cfg, None, device, progress=False)  # seeds from the config
overfit_result, overfit_setup = overfit_run.details, overfit_run.setup
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3))
ax1.semilogy(overfit_result.losses)
ax1.set(xlabel="step", ylabel="loss (focal + box)", title=f"overfitting {overfit_images} images")
history = overfit_result.eval_history
ax2.plot([e["step"] for e in history], [e["eval/map50"] for e in history], "o-")
ax2.set(xlabel="step", ylabel="mAP@0.5 on the same images", ylim=(0, 1.05))
plt.show()
print(
    f"mAP@0.5 on the {overfit_images} training images: {overfit_result.last_eval['eval/map50']:.3f}"
)

# %% [markdown]
# ## 6. A real run: predictions on held-out images
# Fresh images every step (4,000 training images drawn from one seed), random flips, and
# evaluation on 200 images from another seed that training never sees. The run folder gets
# TensorBoard scalars and, at each evaluation, a grid of validation predictions
# (`eval/predictions`); look at them with `make tb`.

# %%
train_cfg = apply_overrides(
    cfg, [f"trainer.max_steps={train_steps}", f"trainer.eval_every={max(train_steps // 4, 1)}"]
)
if smoke:
    train_cfg = apply_overrides(train_cfg, ["data.train_images=32", "data.val_images=8"])
outcome = run(train_cfg, RUNS / "shapes", device, progress=not smoke)
result, setup = outcome.details, outcome.setup
print({k: round(v, 3) for k, v in result.last_eval.items()})

preds, val_targets = predict(setup.model, setup.eval_loader, device)
shown = [zoomed(setup.eval_set[i][0], preds[i], val_targets[i]) for i in range(8)]
big_images, big_preds, big_targets = zip(*shown, strict=True)
plt.figure(figsize=(12, 6.5))
show(prediction_grid(torch.stack(big_images), big_preds, big_targets, setup.class_names,
                     score_thresh=0.4, nrow=4),
     "held-out images: green ground truth, red detections scoring >= 0.4")  # fmt: skip
plt.show()

# %% [markdown]
# ## 7. From detections to mAP
# For each class, all detections of the validation set are sorted by score; walking down the
# list, a detection is a true positive if it overlaps a not-yet-found object of its class by
# IoU ≥ 0.5. Precision and recall after each detection trace the curve below; AP is the area
# under it (VOC's all-point interpolation: each precision replaced by the best one at any higher
# recall), and mAP@0.5 is the mean over classes. A low score threshold (0.05) costs nothing
# here: extra low-score detections only extend the curve to the right.
#
# Reading a curve: precision that is low from the very start means confident false positives.
# After 800 steps on the CPU that is the circle class: the grid above shows squares detected as
# both "square" and "circle" (the C class scores are independent sigmoids, and per-class NMS
# keeps one box of each class). Longer training separates them; the 3,000 steps of
# `python -m labkit.train p10_detection` do.

# %%
metrics = mean_average_precision(preds, val_targets, setup.num_classes, iou_threshold=0.5)
plt.figure(figsize=(5, 4))
for c, (precision, recall) in enumerate(metrics["pr_curves"]):
    name = setup.class_names[c]
    plt.plot(recall, precision, label=f"{name}: AP {metrics['ap'][c]:.2f}")
plt.xlabel("recall")
plt.ylabel("precision")
plt.xlim(0, 1.02)
plt.ylim(0, 1.02)
plt.title(f"mAP@0.5 = {metrics['map']:.3f}")
plt.legend()
plt.show()

# Decoding, for reference: dense outputs -> score threshold -> top-k -> boxes -> per-class NMS.
print(inspect.getsource(decode_predictions).split('"""')[0])

# %% [markdown]
# ## What to remember
# - IoU is the metric; GIoU and DIoU are IoU plus a term that still has a gradient when boxes
#   do not overlap (GIoU) or when one contains the other (DIoU).
# - NMS is greedy: best box first, drop what overlaps it, repeat. The threshold trades
#   duplicate detections against missed neighbours.
# - Anchor-free assignment: a few cells near each object's centre learn it; everything else is
#   background, which is why the focal loss down-weights easy negatives.
# - Overfit a handful of images first: mAP ≈ 1 on them proves boxes, targets and loss line up.
# - mAP@0.5 is the area under each class's precision-recall curve, averaged over classes.
# - Next: `p10_voc.yaml` runs the same code on PASCAL VOC with a pretrained ResNet on the GPU
#   (frozen backbone first, then a 10x smaller learning rate for it).
