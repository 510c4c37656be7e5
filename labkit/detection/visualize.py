"""Drawing boxes on images so that they can be read: one colour per class, thick outlined lines,
labels on a filled background that avoid each other, optional upscaling and a legend.

Ground truth is drawn thin and dashed, in a lightened version of its class's colour, so that it
does not hide a small object or the detection on it; detections are solid and thicker, in the
class's colour with a dark outline, so they stay visible on a shape of the same colour. Everything returns uint8
``[3, H, W]`` tensors, which ``SummaryWriter.add_image`` logs directly and
``plt.imshow(image.permute(1, 2, 0))`` shows. Explained in notebooks/10_detection_tiny.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision.utils import make_grid

__all__ = ["CLASS_COLORS", "class_color", "to_uint8", "draw_detections", "prediction_grid"]

# Okabe-Ito colours (distinguishable with colour-blindness), RGB; class i gets CLASS_COLORS[i % 8].
CLASS_COLORS = (
    (0, 114, 178),  # blue
    (230, 159, 0),  # orange
    (204, 121, 167),  # pink
    (0, 158, 115),  # green
    (213, 94, 0),  # vermilion
    (86, 180, 233),  # sky blue
    (240, 228, 66),  # yellow
    (120, 120, 120),  # grey
)
OUTLINE = (20, 20, 20)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(label: int) -> tuple[int, int, int]:
    """The RGB colour of class ``label``."""
    return CLASS_COLORS[int(label) % len(CLASS_COLORS)]


def to_uint8(image: Tensor) -> Tensor:
    """``[3, H, W]`` float in ``[0, 1]`` (or uint8) → uint8 ``[3, H, W]``."""
    if image.dtype == torch.uint8:
        return image
    return (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def _name(label: int, class_names) -> str:
    return class_names[label] if class_names is not None else str(label)


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def _lighter(color: tuple[int, int, int], amount: float = 0.45) -> tuple[int, int, int]:
    """``color`` moved ``amount`` of the way towards white."""
    return tuple(int(round(c + (255 - c) * amount)) for c in color)


def _dashed_rectangle(canvas: np.ndarray, box, color, thickness: int, dash: int) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay), (bx, by) in (
        ((x1, y1), (x2, y1)),
        ((x2, y1), (x2, y2)),
        ((x2, y2), (x1, y2)),
        ((x1, y2), (x1, y1)),
    ):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, max(length, 1), 2 * dash):
            stop = min(start + dash, length)
            p = (ax + (bx - ax) * start // max(length, 1), ay + (by - ay) * start // max(length, 1))
            q = (ax + (bx - ax) * stop // max(length, 1), ay + (by - ay) * stop // max(length, 1))
            cv2.line(canvas, p, q, color, thickness, cv2.LINE_AA)


def _place_label(box, size, shape, taken) -> tuple[int, int, int, int]:
    """A spot for a label of ``size`` (w, h) at ``box``: above it, inside its top, below it or
    inside its bottom — the first that stays in the image and clear of the ``taken`` labels,
    else the one that overlaps them least (a label far from its box would be misread)."""
    x1, y1, x2, y2 = box
    w, h = size
    height, width = shape
    x = min(max(x1, 0), max(width - w, 0))
    spots = []
    for y in (y1 - h, y1, y2, y2 - h):
        y = min(max(y, 0), max(height - h, 0))
        spot = (x, y, x + w, y + h)
        clash = sum(
            max(0, min(spot[2], t[2]) - max(spot[0], t[0]))
            * max(0, min(spot[3], t[3]) - max(spot[1], t[1]))
            for t in taken
        )
        if clash == 0:
            return spot
        spots.append((clash, spot))
    return min(spots)[1]


def draw_detections(
    image: Tensor,
    prediction: dict[str, Tensor] | None = None,
    target: dict[str, Tensor] | None = None,
    class_names=None,
    score_thresh: float = 0.3,
    width: int = 2,
    *,
    scale: int = 1,
    numbered: bool = False,
    text: str = "class score",
    font_scale: float = 0.45,
    max_labels: int | None = None,
) -> Tensor:
    """Draw ground-truth (dashed) and predicted (solid) boxes on one image, coloured by class.

    Args:
        image: ``[3, H, W]`` float in ``[0, 1]`` or uint8.
        prediction: ``{"boxes": [D, 4] xyxy, "scores": [D], "labels": [D]}``; boxes scoring below
            ``score_thresh`` are not drawn. Labels read "class score".
        target: ``{"boxes": [K, 4] xyxy, "labels": [K]}``. Labels read "class" (only when there
            is no prediction to draw, to keep the picture readable).
        class_names: names indexed by label (default: the label number).
        score_thresh: lowest score drawn.
        width: line width in output pixels.
        scale: enlarge the image this many times first (nearest neighbour, boxes scaled along),
            so that labels on a small image stay readable.
        numbered: prefix each detection's label with its rank, ``#1`` for the first in
            ``prediction`` (e.g. the order NMS kept them in).
        text: what a detection's label says: ``"class score"``, ``"score"`` or ``"none"`` (no
            labels at all: many overlapping boxes).
        font_scale: OpenCV font scale of the labels.
        max_labels: label only the first (best-scoring) this many drawn detections; the
            others keep their box but no text, so dozens of overlapping boxes stay readable.

    Returns:
        uint8 ``[3, H * scale, W * scale]``.
    """
    canvas = to_uint8(image)
    if scale != 1:
        canvas = canvas.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    canvas = np.ascontiguousarray(canvas.permute(1, 2, 0).cpu().numpy())  # [H, W, 3] RGB
    shape = canvas.shape[:2]
    labels_to_write = []  # (box in pixels, text, colour), written last, on top of every line

    def pixels(boxes: Tensor) -> list[tuple[int, int, int, int]]:
        return [
            tuple(int(round(v)) for v in box)
            for box in (boxes.detach().cpu().float() * scale).tolist()
        ]

    shown = None
    if prediction is not None:
        shown = (prediction["scores"] >= score_thresh).nonzero().squeeze(1).tolist()
    if target is not None and target["boxes"].numel() > 0:
        for box, label in zip(pixels(target["boxes"]), target["labels"].tolist(), strict=True):
            color = class_color(label)
            # Thin, light and dashed: a small object and the detection on it stay visible.
            _dashed_rectangle(canvas, box, _lighter(color), max(1, width // 2), 3 * width + 2)
            if not shown and text != "none":
                labels_to_write.append((box, _name(label, class_names), color))
    if shown:
        boxes = pixels(prediction["boxes"][shown])
        # Labels go to the best-scoring boxes first (prediction order need not be by score).
        by_score = sorted(shown, key=lambda i: -float(prediction["scores"][i]))
        labelled = set(by_score[:max_labels] if max_labels is not None else by_score)
        for rank, (box, i) in enumerate(zip(boxes, shown, strict=True), start=1):
            label = int(prediction["labels"][i])
            color = class_color(label)
            x1, y1, x2, y2 = box
            cv2.rectangle(canvas, (x1, y1), (x2, y2), OUTLINE, width + 2, cv2.LINE_AA)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, width, cv2.LINE_AA)
            score = f"{float(prediction['scores'][i]):.2f}"
            words = score if text == "score" else f"{_name(label, class_names)} {score}"
            if text != "none" and i in labelled:
                labels_to_write.append((box, f"#{rank} {words}" if numbered else words, color))

    taken: list[tuple[int, int, int, int]] = []
    for box, words, color in labels_to_write:
        (w, h), baseline = cv2.getTextSize(words, FONT, font_scale, 1)
        spot = _place_label(box, (w + 4, h + baseline + 3), shape, taken)
        taken.append(spot)
        cv2.rectangle(canvas, spot[:2], (spot[2] - 1, spot[3] - 1), color, -1)
        cv2.putText(
            canvas, words, (spot[0] + 2, spot[3] - baseline - 1), FONT, font_scale,
            _text_color(color), 1, cv2.LINE_AA,
        )  # fmt: skip
    return torch.from_numpy(canvas).permute(2, 0, 1).contiguous()


def legend_strip(class_names: Sequence[str], width: int, height: int = 26) -> Tensor:
    """A white strip naming each class's colour and the two line styles: uint8 ``[3, h, width]``
    (two rows of ``height`` when one is too narrow for both)."""
    note = "solid: detection   dashed: ground truth"
    text_width = cv2.getTextSize(note, FONT, 0.45, 1)[0][0]
    names_width = sum(28 + cv2.getTextSize(n, FONT, 0.45, 1)[0][0] for n in class_names)
    one_row = 6 + names_width + 10 + text_width <= width
    strip = np.full((height if one_row else 2 * height, width, 3), 255, dtype=np.uint8)
    x, y = 6, height // 2
    for i, name in enumerate(class_names):
        cv2.rectangle(strip, (x, y - 7), (x + 14, y + 7), class_color(i), -1)
        cv2.putText(strip, name, (x + 18, y + 5), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 28 + cv2.getTextSize(name, FONT, 0.45, 1)[0][0]
    x, y = (x + 10, y) if one_row else (6, y + height)
    cv2.putText(strip, note, (x, y + 5), FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    return torch.from_numpy(strip).permute(2, 0, 1).contiguous()


def prediction_grid(
    images: Tensor,
    predictions: list[dict[str, Tensor]] | None = None,
    targets: list[dict[str, Tensor]] | None = None,
    class_names=None,
    score_thresh: float = 0.3,
    nrow: int = 4,
    *,
    scale: int = 1,
    text: str = "class score",
    legend: bool = False,
) -> Tensor:
    """A grid of images with their boxes, for ``SummaryWriter.add_image(tag, grid, step)``.

    Args:
        images: ``[B, 3, H, W]`` float in ``[0, 1]`` or uint8.
        predictions, targets: B dicts each, or None.
        class_names, score_thresh, scale, text: as in :func:`draw_detections`.
        nrow: images per row.
        legend: add a strip under the grid naming the class colours and line styles (needs
            ``class_names``).

    Returns:
        uint8 ``[3, H_grid, W_grid]``.
    """
    batch = images.shape[0]
    for name, items in (("predictions", predictions), ("targets", targets)):
        if items is not None and len(items) != batch:
            raise ValueError(f"got {len(items)} {name} for {batch} images")
    drawn = [
        draw_detections(
            images[i],
            predictions[i] if predictions is not None else None,
            targets[i] if targets is not None else None,
            class_names,
            score_thresh,
            scale=scale,
            text=text,
        )
        for i in range(batch)
    ]
    grid = make_grid(torch.stack(drawn), nrow=nrow, padding=2, pad_value=255)
    if legend and class_names is not None:
        grid = torch.cat([grid, legend_strip(class_names, grid.shape[-1])], dim=1)
    return grid
