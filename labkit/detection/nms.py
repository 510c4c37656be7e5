"""Non-maximum suppression (NMS), exact greedy, with the same contract as ``torchvision.ops``.

Greedy NMS visits boxes from the highest score down and keeps a box unless it overlaps (IoU above
the threshold) a box kept before it. Written as a recursion over boxes sorted by score::

    keep[j] = not any(keep[i] and IoU(i, j) > threshold for i < j)          (*)

The textbook implementation visits one box at a time, which is slow in Python. Here (*) is
solved block by block, all inside tensor operations:

1. Sort once by score (stable, so equal scores keep their input order: torchvision's CPU kernel
   sorts stably too, so both return the same indices even with ties).
2. Split the sorted boxes into blocks: a first block of 256, then blocks four times larger (up to
   1024), because after the first block most boxes are suppressed by boxes already kept.
3. For each block, drop every box that overlaps a box kept in an earlier block: one
   ``[kept, block]`` IoU matrix, reduced with a max over the kept boxes.
4. Among the block's survivors, solve (*) by fixed-point iteration on their 0/1 "i suppresses j"
   matrix: start from "keep all" and re-evaluate (*) for every box at once (one matrix-vector
   product) until nothing changes. A sweep always settles at least the first still-undecided box
   (its predecessors are settled), and (*) has exactly one solution, so the loop ends at the
   greedy answer, usually after a few sweeps: as many as the longest chain of boxes each
   suppressing the next. A contrived chain of C boxes needs C sweeps, which the block size cap
   keeps affordable.

Only ``[kept, block]`` and ``[survivors, survivors]`` IoUs are computed, never the full
``[N, N]`` matrix, which is what keeps this within reach of torchvision's compiled C++ kernel
(benchmarks/bench_nms.py measures it).

Explained in notebooks/10_detection_tiny.py.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nms", "batched_nms"]

FIRST_BLOCK = 256  # boxes in the first block; each later block is GROWTH times larger ...
GROWTH = 4
MAX_BLOCK = 1024  # ... up to this size, which bounds the fixed-point sweeps on a pathological chain


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


def _box_columns(boxes: Tensor) -> Tensor:
    """``[N, 4]`` xyxy boxes → ``[5, N]`` rows ``x1, y1, x2, y2, area`` (float32 or float64).

    Coordinates as rows make every pairwise operation below run over contiguous memory, and the
    areas are computed once instead of once per block.
    """
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()  # half precision: same upcast as labkit.detection.boxes
    x1, y1, x2, y2 = boxes.T  # each [N]
    return torch.stack([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)])


def _iou_columns(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every pair, from :func:`_box_columns` rows. ``[5, P]``, ``[5, Q]`` → ``[P, Q]``.

    The same arithmetic as :func:`labkit.detection.boxes.box_iou` (tests check they are equal),
    written with in-place operations because NMS calls it in a loop. An empty union (two
    degenerate boxes) is clamped to the smallest positive float, giving IoU 0, never NaN: a NaN
    would poison the ``amax`` below. No gradient flows through NMS, so the clamp is harmless.
    """
    top_left = torch.maximum(a[:2, :, None], b[:2, None, :])  # [2, P, Q]: max of the x1s, y1s
    wh = torch.minimum(a[2:4, :, None], b[2:4, None, :]).sub_(top_left).clamp_(min=0)
    inter = wh[0] * wh[1]  # [P, Q]
    union = (a[4, :, None] + b[4]).sub_(inter).clamp_(min=torch.finfo(a.dtype).tiny)
    return inter.div_(union)


def _greedy_keep(iou: Tensor, iou_threshold: float) -> Tensor:
    """Solve (*) for ``C`` boxes sorted by score, given their IoU matrix.

    Args:
        iou: ``[C, C]`` IoU of the boxes, in score order. Overwritten.
        iou_threshold: suppression threshold.

    Returns:
        ``[C]`` bool keep mask: the greedy NMS result.
    """
    # suppresses[i, j] = 1.0 when box i would suppress box j: IoU above the threshold and i
    # scored higher (i < j, the upper triangle). Floats, so a sweep is one matrix-vector product.
    suppresses = iou.triu_(diagonal=1).gt_(iou_threshold)  # [C, C], 0.0 / 1.0
    keep = torch.ones(suppresses.shape[0], dtype=suppresses.dtype, device=suppresses.device)
    while True:
        # (keep @ suppresses)[j] counts the boxes currently kept that suppress box j (exact in
        # floating point: small integers); box j is kept when that count is 0.
        new_keep = (keep @ suppresses).eq_(0)
        if torch.equal(new_keep, keep):
            return keep.bool()
        keep = new_keep


def _nms_sorted(columns: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of boxes sorted by decreasing score.

    ``[5, N]`` columns (see :func:`_box_columns`) → ``[K]`` kept positions in sorted order.
    """
    n = columns.shape[1]
    kept = columns[:, :0]  # [5, K] columns of the boxes kept so far
    kept_positions = []
    start, block = 0, FIRST_BLOCK
    while start < n:
        stop = min(n, start + block)
        if kept.shape[1] > 0:
            # Step 3: a box survives when no kept box overlaps it more than the threshold.
            max_iou = _iou_columns(kept, columns[:, start:stop]).amax(dim=0)  # [stop - start]
            candidates = (max_iou <= iou_threshold).nonzero().squeeze(1) + start
        else:
            candidates = torch.arange(start, stop, device=columns.device)
        candidate_columns = columns[:, candidates]  # [5, C]
        # Step 4: greedy among the survivors of this block.
        keep = _greedy_keep(_iou_columns(candidate_columns, candidate_columns), iou_threshold)
        kept = torch.cat([kept, candidate_columns[:, keep]], dim=1)
        kept_positions.append(candidates[keep])
        start, block = stop, min(GROWTH * block, MAX_BLOCK)
    return torch.cat(kept_positions)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression; same contract and output as ``torchvision.ops.nms``.

    Args:
        boxes: ``[N, 4]`` float xyxy boxes.
        scores: ``[N]`` scores, higher is better.
        iou_threshold: a box is discarded when its IoU with a kept, higher-scored box is
            *strictly greater* than this.

    Returns:
        ``[K]`` int64 indices into ``boxes`` of the kept boxes, by decreasing score (ties in input
        order). Degenerate boxes (zero area) have IoU 0 with everything, so they are never
        suppressed, as in torchvision.
    """
    _check_nms_inputs(boxes, scores)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices  # [N]
    return order[_nms_sorted(_box_columns(boxes[order]), iou_threshold)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS applied independently per category; same contract as ``torchvision.ops.batched_nms``.

    Boxes of different categories never suppress each other. Rather than looping over categories,
    every box is shifted by ``idx * (max_coordinate + 1)`` along both axes, so boxes of different
    categories land in disjoint regions and cannot overlap; one ``nms`` call then does all of them.

    Args:
        boxes: ``[N, 4]`` float xyxy boxes.
        scores: ``[N]`` scores.
        idxs: ``[N]`` integer category (or image) of each box.
        iou_threshold: as in :func:`nms`.

    Returns:
        ``[K]`` int64 indices of the kept boxes, by decreasing score (ties in input order).
        torchvision returns exactly this up to 1,000 boxes on CPU; above that it switches to a
        loop over categories whose final sort is not stable, so with tied scores it keeps the
        same boxes but may list the tied ones in another order.
    """
    _check_nms_inputs(boxes, scores)
    if idxs.shape != (boxes.shape[0],):
        raise ValueError(
            f"idxs must be [N] with one category per box, got {tuple(idxs.shape)} "
            f"for {boxes.shape[0]} boxes"
        )
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)  # [N], same arithmetic as torchvision
    return nms(boxes + offsets[:, None], scores, iou_threshold)
