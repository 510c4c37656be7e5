"""Non-maximum suppression (NMS), exact greedy, with the same contract as ``torchvision.ops``.

Greedy NMS visits boxes from the highest score down and keeps a box unless it overlaps (IoU above
the threshold) a box kept before it. Written as a recursion over boxes sorted by score::

    keep[j] = not any(keep[i] and IoU(i, j) > threshold for i < j)          (*)

**Same answer as torchvision, ties included.** torchvision's CPU kernel computes each IoU in the
boxes' dtype, ``inter / (area_i + area_j - inter)``, and compares it with the threshold as a
C++ ``double``: a float32 IoU is widened to double before ``>``. That matters on ties. Two
boxes with IoU exactly 3/10 have a float32 IoU of 0.30000001 (the float nearest 0.3), which is
above the double 0.29999999999999999 that ``0.3`` stands for, so torchvision suppresses the
second box; comparing in float32 (0.30000001 > 0.30000001) would keep it. Here the IoU is
computed with the same operations in the same order, and the threshold is replaced by the largest
value of the boxes' dtype not above it: for a float32 ``x``, ``x > threshold`` (in double) exactly
when ``x > that value`` (in float32), so every comparison below can stay in the boxes' dtype.
This follows torchvision's CPU kernel on every device. (Its CUDA kernel rounds the threshold to
float32 and so keeps that box: on exact ties torchvision's own answers depend on the device.)

**Fast without a Python loop over boxes.** The textbook implementation visits one box at a time,
which is slow in Python. Here (*) is solved a "head" of boxes at a time, in tensor operations:

1. Sort once by score (stable, so equal scores keep their input order: torchvision's CPU kernel
   sorts stably too, so both return the same indices even with ties).
2. Take the first ``HEAD`` boxes still in play. Nothing outside them can suppress them (every
   earlier box is already decided), so (*) restricted to the head gives their final answer:
   solve it by fixed-point iteration on the head's 0/1 "i suppresses j" matrix. Start from
   "keep all" and re-evaluate (*) for every box at once (one matrix-vector product) until nothing
   changes. A sweep always settles at least the first still-undecided box (its predecessors are
   settled), and (*) has exactly one solution, so the loop ends at the greedy answer, usually
   after a few sweeps: as many as the longest chain of boxes each suppressing the next (at most
   the head's size, which bounds the cost of a contrived chain).
3. Drop from the rest every box that overlaps a box the head just kept: one ``[kept, rest]``
   IoU matrix, reduced with a max over the kept boxes. Detector output is clustered around few
   objects, so this removes most of the boxes. The survivors are the new boxes in play: repeat
   from 2 until at most ``SOLVE_DIRECTLY`` remain, which step 2 then solves in one go.

Only IoUs of a head with itself and of the boxes just kept with the boxes still in play are
computed, never the full ``[N, N]`` matrix (benchmarks/bench_nms.py measures the speed against
torchvision's compiled C++ loop).

Explained in notebooks/10_detection_tiny.py.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = ["nms", "batched_nms"]

HEAD = 160  # boxes solved at a time by fixed-point sweeps over their [HEAD, HEAD] IoU matrix
SOLVE_DIRECTLY = 320  # when at most this many boxes are left in play, they form the last head

# torchvision.ops.batched_nms offsets the boxes of each category apart and runs one NMS while
# ``boxes`` holds at most this many numbers (4 per box), and loops over categories above it. We
# make the same choice so that both return exactly the same indices: the two strategies round
# coordinates differently and order tied scores differently. The CPU limit has long been 4,000;
# other devices: 100,000 in recent torchvision (20,000 before pytorch/vision#8925).
BATCHED_OFFSET_MAX_NUMEL_CPU = 4_000
BATCHED_OFFSET_MAX_NUMEL_OTHER = 100_000


def _check_nms_inputs(boxes: Tensor, scores: Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] xyxy, got shape {tuple(boxes.shape)}")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(
            f"scores must be [N] with one score per box, got {tuple(scores.shape)} "
            f"for {boxes.shape[0]} boxes"
        )
    if not boxes.is_floating_point():
        raise ValueError(
            f"boxes must be a floating point tensor (as in torchvision.ops.nms), got {boxes.dtype}:"
            " convert them with boxes.float()"
        )


@functools.lru_cache(maxsize=256)
def _threshold_in(dtype: torch.dtype, iou_threshold: float) -> Tensor:
    """The largest value of ``dtype`` that is ``<= iou_threshold``, as a 0-dim tensor.

    For every ``x`` of ``dtype``: ``x > iou_threshold`` compared in float64 (what torchvision's
    C++ kernel does) exactly when ``x > _threshold_in(dtype, iou_threshold)`` compared in
    ``dtype`` (what a tensor comparison does). Rounding the threshold to the nearest float32
    instead is wrong on ties: 0.3 rounds *up* to 0.30000001, so an IoU of exactly that value
    would not count as above 0.3.

    A 0-dim tensor rather than a Python float because comparing with a Python number costs a
    conversion on every call (a few microseconds, and NMS makes a dozen comparisons), and cached
    because a model calls NMS with the same threshold over and over. Never modified in place.
    """
    exact = torch.tensor(iou_threshold, dtype=torch.float64, device="cpu")  # CPU: usable with
    rounded = exact.to(dtype)  # boxes on any device. Nearest value of dtype, maybe above exact.
    if rounded > exact:
        rounded = torch.nextafter(rounded, torch.tensor(-math.inf, dtype=dtype, device="cpu"))
    return rounded


@functools.lru_cache(maxsize=8)
def _below_diagonal(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[size, size]`` matrix, 1.0 strictly below the diagonal and 0.0 elsewhere (cached).

    Multiplying by a slice of it is three times faster than ``tril_`` on every call.
    """
    return torch.ones(size, size, dtype=dtype, device=device).tril_(diagonal=-1)


def _box_columns(boxes: Tensor) -> Tensor:
    """``[N, 4]`` xyxy boxes → ``[5, N]`` rows ``x1, y1, x2, y2, area`` (float32 or float64).

    Coordinates as rows make every pairwise operation below run over contiguous memory, and the
    areas are computed once, as torchvision computes them: ``(x2 - x1) * (y2 - y1)``, even when
    that is 0 (a degenerate box) or negative (an inverted one), so that every IoU is the same.
    """
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()  # half precision: same upcast as labkit.detection.boxes
    x1, y1, x2, y2 = boxes.unbind(1)  # each [N]
    return torch.stack([x1, y1, x2, y2, torch.sub(x2, x1).mul_(torch.sub(y2, y1))])


def _iou_columns(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every pair, from :func:`_box_columns` rows. ``[5, P]``, ``[5, Q]`` → ``[P, Q]``.

    Operation for operation what torchvision's kernel computes for box ``i`` of ``a`` (the
    higher-scored one) against box ``j`` of ``b``: ``w = max(0, min(x2) - max(x1))``, the same
    for ``h``, ``inter = w * h``, ``inter / ((area_i + area_j) - inter)``, so the IoUs agree bit
    for bit with ``torchvision.ops.box_iou`` (tests check it), NaN for two zero-area boxes
    included (NaN is not above any threshold). Every step is symmetric in ``i`` and ``j``, so
    ``_iou_columns(a, a)`` is exactly symmetric. In-place operations because NMS calls this in a
    loop.
    """
    a, b = a.unsqueeze(2), b.unsqueeze(1)  # [5, P, 1] and [5, 1, Q]: broadcast to [5, P, Q]
    top_left = torch.maximum(a[:2], b[:2])  # [2, P, Q]: max of the x1s, of the y1s
    w, h = torch.minimum(a[2:4], b[2:4]).sub_(top_left).relu_().unbind()  # [P, Q]: max(0, ...)
    inter = w.mul_(h)
    return inter.div_(torch.add(a[4], b[4]).sub_(inter))


def _greedy_keep(head: Tensor, threshold: Tensor) -> Tensor:
    """Solve (*) for ``C`` boxes sorted by score that no earlier box suppresses.

    Args:
        head: ``[5, C]`` columns (see :func:`_box_columns`), in score order.
        threshold: from :func:`_threshold_in`.

    Returns:
        ``[K]`` int64 positions in ``head`` of the boxes greedy NMS keeps, increasing.
    """
    size = head.shape[1]
    below = _below_diagonal(max(size, SOLVE_DIRECTLY), head.dtype, head.device)[:size, :size]
    # suppressed_by[j, i] = 1.0 when box i would suppress box j: IoU above the threshold and i
    # scored higher (i < j, below the diagonal; the IoU matrix is symmetric). Floats, so a sweep
    # is one matrix-vector product.
    suppressed_by = _iou_columns(head, head).gt_(threshold).mul_(below)  # [C, C], 0.0 / 1.0
    keep = head.new_ones(size)  # [C] 1.0 / 0.0
    while True:
        # (suppressed_by @ keep)[j] counts the boxes currently kept that suppress box j (exact in
        # floating point: small integers); box j is kept when that count is 0, which
        # logical_not_ turns into 1.0 (and any other count into 0.0).
        new_keep = torch.mv(suppressed_by, keep).logical_not_()
        if torch.equal(new_keep, keep):
            return keep.nonzero().squeeze(1)
        keep = new_keep


def _nms_sorted(columns: Tensor, threshold: Tensor) -> Tensor:
    """Greedy NMS of boxes sorted by decreasing score (steps 2 and 3 of the module docstring).

    ``[5, N]`` columns (see :func:`_box_columns`) → ``[K]`` kept positions, increasing.
    (``index_select`` rather than ``tensor[index]`` throughout: the same result for an index
    tensor, at a third of the call overhead, a sizeable share of the time at 1,000 boxes.)
    """
    if columns.shape[1] <= SOLVE_DIRECTLY:
        return _greedy_keep(columns, threshold)
    positions = torch.arange(columns.shape[1], device=columns.device)  # of the boxes in play
    kept_positions = []
    while columns.shape[1] > SOLVE_DIRECTLY:
        head, rest = columns[:, :HEAD], columns[:, HEAD:]
        keep = _greedy_keep(head, threshold)  # [K], never empty: the first box is always kept
        kept_positions.append(positions.index_select(0, keep))
        # Step 3: a box stays in play when no box just kept overlaps it more than the threshold.
        # (Compared before the max over kept boxes: a NaN IoU is not above the threshold.)
        overlapped = _iou_columns(head.index_select(1, keep), rest).gt_(threshold).amax(dim=0)
        survivors = overlapped.logical_not_().nonzero().squeeze(1)  # [S]
        columns = rest.index_select(1, survivors)
        positions = positions[HEAD:].index_select(0, survivors)
    kept_positions.append(positions.index_select(0, _greedy_keep(columns, threshold)))
    return torch.cat(kept_positions)


def _nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """:func:`nms` on checked inputs, in inference mode (see :func:`nms`)."""
    order = torch.sort(scores, descending=True, stable=True).indices  # [N]
    if boxes.shape[0] == 0 or math.isnan(iou_threshold):
        return order  # nothing to suppress, or nothing is "greater than NaN"
    columns = _box_columns(boxes.index_select(0, order))
    threshold = _threshold_in(columns.dtype, iou_threshold)
    return order.index_select(0, _nms_sorted(columns, threshold))


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression; same contract and output as ``torchvision.ops.nms``.

    Args:
        boxes: ``[N, 4]`` float xyxy boxes.
        scores: ``[N]`` scores, higher is better.
        iou_threshold: a box is discarded when its IoU with a kept, higher-scored box is
            *strictly greater* than this, compared as torchvision does: the IoU in the boxes'
            dtype against the threshold as a float64 (see the module docstring on ties).

    Returns:
        ``[K]`` int64 indices into ``boxes`` of the kept boxes, by decreasing score (ties in input
        order). Degenerate boxes (zero area) have IoU 0 with every other box (NaN with another
        degenerate box, as in torchvision), so they are never suppressed.
    """
    _check_nms_inputs(boxes, scores)
    # Inference mode skips autograd's bookkeeping on each of the few dozen small operations
    # (about 15 % of the time at 1,000 boxes). Its tensors cannot be saved for a backward pass,
    # so the answer is returned as an ordinary tensor.
    with torch.inference_mode():
        keep = _nms(boxes, scores, float(iou_threshold))
    return keep.clone()


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS applied independently per category; same contract and output as
    ``torchvision.ops.batched_nms``.

    Boxes of different categories never suppress each other. Up to 1,000 boxes (on CPU),
    rather than looping over categories, every box is shifted by ``idx * (max_coordinate + 1)``
    along both axes, so boxes of different categories land in disjoint regions and cannot
    overlap; one ``nms`` call then does all of them. Above that, one ``nms`` per category. This
    is torchvision's choice, copied so that both return the same indices in the same order:
    shifting rounds coordinates (so an IoU on the threshold can land on either side), and the
    per-category path orders tied scores by an unstable sort.

    Args:
        boxes: ``[N, 4]`` float xyxy boxes.
        scores: ``[N]`` scores.
        idxs: ``[N]`` integer category (or image) of each box.
        iou_threshold: as in :func:`nms`.

    Returns:
        ``[K]`` int64 indices of the kept boxes, by decreasing score.
    """
    _check_nms_inputs(boxes, scores)
    if idxs.shape != (boxes.shape[0],):
        raise ValueError(
            f"idxs must be [N] with one category per box, got {tuple(idxs.shape)} "
            f"for {boxes.shape[0]} boxes"
        )
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    cpu = boxes.device.type == "cpu"
    if boxes.numel() > (BATCHED_OFFSET_MAX_NUMEL_CPU if cpu else BATCHED_OFFSET_MAX_NUMEL_OTHER):
        return _batched_nms_per_category(boxes, scores, idxs, iou_threshold)
    with torch.inference_mode():  # as in nms
        # [N] offsets, the same arithmetic as torchvision: idx * (max_coordinate + 1)
        offsets = torch.mul(idxs.to(boxes), boxes.max().add_(1))
        keep = _nms(boxes.add(offsets.unsqueeze(1)), scores, float(iou_threshold))
    return keep.clone()


def _batched_nms_per_category(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float
) -> Tensor:
    """:func:`batched_nms` as one :func:`nms` per category, in torchvision's order."""
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)  # [N]
    for category in torch.unique(idxs):
        members = torch.where(idxs == category)[0]  # [M] indices of this category's boxes
        keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    kept = torch.where(keep_mask)[0]
    # The same (not stable) sort call as torchvision: equal scores come out in the same order.
    return kept[scores[kept].sort(descending=True)[1]]
