"""Detection data: a synthetic, seeded shapes dataset with exact boxes, box-aware transforms, and
a PASCAL VOC wrapper that returns the same target format.

Every dataset here returns ``(image, target)``:

* ``image``: float ``[3, H, W]`` in ``[0, 1]``;
* ``target``: ``{"boxes": [K, 4] float32 xyxy pixels, "labels": [K] int64}``, with pixel-edge
  coordinates: a shape covering pixel columns 10..19 has ``x1 = 10, x2 = 20``.

``ShapesDataset`` needs no download, so the whole detection phase runs offline: each image is
drawn on the fly from a generator seeded with ``(seed, index)``, so item i is the same in every
epoch, process and worker. Explained in notebooks/10_detection_tiny.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from labkit.data.common import DataError
from labkit.detection.boxes import box_iou
from labkit.utils.config import ConfigError

__all__ = [
    "SHAPE_CLASSES",
    "VOC_CLASSES",
    "ShapesDataset",
    "detection_collate",
    "resize",
    "horizontal_flip",
    "RandomHorizontalFlip",
    "VOCDetectionDataset",
    "voc_dataset",
    "write_voc_tree",
    "build_datasets",
]

SHAPE_CLASSES = ("circle", "square", "triangle")
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


# ---------------------------------------------------------------- synthetic shapes


def _shape_mask(kind: int, cx: float, cy: float, size: float, height: int, width: int) -> Tensor:
    """Boolean ``[H, W]`` mask of one shape of side/diameter ``size`` centred at (cx, cy)."""
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5  # pixel centres
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    half = size / 2
    if kind == 0:  # circle
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
    if kind == 1:  # axis-aligned square
        return ((xs - cx).abs() <= half) & ((ys - cy).abs() <= half)
    # triangle pointing up: apex at the top centre, base at the bottom; width grows with depth
    depth = (ys - (cy - half)) / size  # 0 at the apex, 1 at the base
    return (depth >= 0) & (depth <= 1) & ((xs - cx).abs() <= half * depth)


def _mask_to_box(mask: Tensor) -> Tensor:
    """Tight xyxy box (pixel edges) of a non-empty boolean ``[H, W]`` mask."""
    rows = mask.any(dim=1).nonzero().squeeze(1)
    cols = mask.any(dim=0).nonzero().squeeze(1)
    return torch.stack([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]).float()


class ShapesDataset(Dataset):
    """Images of circles, squares and triangles on a cluttered background, with exact boxes.

    The class of a shape is its kind (``SHAPE_CLASSES[:num_classes]``); colour, size and position
    vary, shapes may overlap a little (box IoU at most ``max_overlap``), and the background is a
    colour gradient with thin random lines and pixel noise, so colour alone cannot tell objects
    from background. Boxes are amodal: they cover the whole shape even where a later one overlaps.

    Args:
        num_images: length of the dataset.
        image_size: images are ``image_size x image_size``.
        num_classes: 1 to 3 shape kinds.
        min_objects, max_objects: objects per image, inclusive (an object that cannot be placed
            within ``max_overlap`` in 10 tries is skipped, so crowded images may have fewer).
        min_size, max_size: shape diameter in pixels (default 1/8 and 3/8 of the image).
        max_overlap: largest IoU allowed between two boxes of an image.
        noise_std: standard deviation of the pixel noise.
        clutter_lines: number of background lines.
        seed: base seed; item i is drawn from a generator seeded with ``seed * 1_000_003 + i``.
        transform: optional ``transform(image, target) -> (image, target)``.
    """

    def __init__(
        self,
        num_images: int,
        image_size: int = 128,
        num_classes: int = 3,
        min_objects: int = 1,
        max_objects: int = 4,
        seed: int = 0,
        min_size: int | None = None,
        max_size: int | None = None,
        max_overlap: float = 0.3,
        noise_std: float = 0.03,
        clutter_lines: int = 4,
        transform=None,
    ):
        if not 1 <= num_classes <= len(SHAPE_CLASSES):
            raise ValueError(
                f"num_classes must be 1..{len(SHAPE_CLASSES)} ({SHAPE_CLASSES}), got {num_classes}"
            )
        if not 0 <= min_objects <= max_objects:
            raise ValueError(
                f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}"
            )
        self.num_images = num_images
        self.image_size = image_size
        self.num_classes = num_classes
        self.min_objects, self.max_objects = min_objects, max_objects
        self.min_size = min_size if min_size is not None else max(4, image_size // 8)
        self.max_size = (
            max_size if max_size is not None else max(self.min_size, 3 * image_size // 8)
        )
        if self.max_size >= image_size:
            raise ValueError(
                f"max_size {self.max_size} must be smaller than image_size {image_size}"
            )
        self.max_overlap = max_overlap
        self.noise_std = noise_std
        self.clutter_lines = clutter_lines
        self.seed = seed
        self.transform = transform
        self.class_names = SHAPE_CLASSES[:num_classes]

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = self._background(g)
        boxes, labels = [], []
        num_objects = int(torch.randint(self.min_objects, self.max_objects + 1, (1,), generator=g))
        for _ in range(num_objects):
            drawn = self._draw_one(image, boxes, g)
            if drawn is not None:
                boxes.append(drawn[0])
                labels.append(drawn[1])
        image = (image + self.noise_std * torch.randn(image.shape, generator=g)).clamp(0, 1)
        target = {
            "boxes": torch.stack(boxes) if boxes else torch.zeros(0, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def _background(self, g: torch.Generator) -> Tensor:
        """A smooth two-colour gradient crossed by a few thin lines. ``[3, S, S]``."""
        s = self.image_size
        c0, c1 = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
        angle = torch.rand(1, generator=g) * 2 * torch.pi
        ys, xs = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")
        ramp = (xs * torch.cos(angle) + ys * torch.sin(angle)).sub(-2).div(4)  # in [0, 1]
        image = c0 + (c1 - c0) * ramp  # [3, S, S]
        for _ in range(self.clutter_lines):
            (x0, y0, x1, y1), colour = torch.rand(4, generator=g) * s, torch.rand(3, generator=g)
            t = torch.linspace(0, 1, 2 * s)
            cols = (x0 + (x1 - x0) * t).long().clamp(0, s - 1)
            rows = (y0 + (y1 - y0) * t).long().clamp(0, s - 1)
            image[:, rows, cols] = colour[:, None]
        return image

    def _draw_one(self, image: Tensor, boxes: list[Tensor], g: torch.Generator, tries: int = 10):
        """Paint one shape that overlaps earlier ones at most ``max_overlap``; ``(box, label)``."""
        s = self.image_size
        for _ in range(tries):
            kind = int(torch.randint(0, self.num_classes, (1,), generator=g))
            size = float(torch.randint(self.min_size, self.max_size + 1, (1,), generator=g))
            cx, cy = (size / 2 + torch.rand(2, generator=g) * (s - size)).tolist()
            mask = _shape_mask(kind, cx, cy, size, s, s)
            if not mask.any():
                continue
            box = _mask_to_box(mask)
            if boxes and box_iou(box[None], torch.stack(boxes)).max() > self.max_overlap:
                continue
            # A colour far from the local background, so every shape is visible.
            local = image[:, mask].mean(dim=1)  # [3]
            colour = torch.rand(3, generator=g)
            if (colour - local).abs().max() < 0.35:
                colour = (local + 0.5) % 1.0
            image[:, mask] = colour[:, None]
            return box, kind
        return None


def detection_collate(batch: list[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    """DataLoader ``collate_fn``: stack images, keep targets as a list (their K differ).

    Returns:
        ``([B, 3, H, W] images, list of B target dicts)``.
    """
    images, targets = zip(*batch, strict=True)
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise ValueError(
            f"images of one batch must have the same size to be stacked, got {sorted(shapes)}; "
            "add a resize transform, e.g. lambda im, t: resize(im, t, 256)"
        )
    return torch.stack(images), list(targets)


# ---------------------------------------------------------------- box-aware transforms


def resize(image: Tensor, target: dict, size: int | tuple[int, int]) -> tuple[Tensor, dict]:
    """Resize an image to ``size`` (int: square, or ``(height, width)``) and scale its boxes.

    A box scales with the image: x by ``new_w / old_w``, y by ``new_h / old_h``.
    """
    new_h, new_w = (size, size) if isinstance(size, int) else size
    old_h, old_w = image.shape[-2:]
    resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[
        0
    ]
    scale = torch.tensor([new_w / old_w, new_h / old_h, new_w / old_w, new_h / old_h])
    return resized, {**target, "boxes": target["boxes"] * scale}


def horizontal_flip(image: Tensor, target: dict) -> tuple[Tensor, dict]:
    """Mirror left-right; a box ``(x1, y1, x2, y2)`` becomes ``(W - x2, y1, W - x1, y2)``."""
    width = image.shape[-1]
    x1, y1, x2, y2 = target["boxes"].unbind(-1)
    boxes = torch.stack([width - x2, y1, width - x1, y2], dim=-1)
    return image.flip(-1), {**target, "boxes": boxes}


class RandomHorizontalFlip:
    """Flip with probability ``p``, drawing from ``generator`` so a run can be replayed."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        self.p = p
        self.generator = generator

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        if torch.rand(1, generator=self.generator).item() < self.p:
            return horizontal_flip(image, target)
        return image, target


# ---------------------------------------------------------------- PASCAL VOC


class VOCDetectionDataset(Dataset):
    """``torchvision.datasets.VOCDetection`` with targets in the lab's format.

    Labels index ``classes`` (default: the 20 VOC classes); objects of other classes and, by
    default, objects marked "difficult" are dropped. VOC coordinates are 1-based inclusive pixel
    indices, so ``xmin - 1`` and ``xmax`` are the pixel-edge coordinates used here.
    """

    def __init__(self, voc, classes=None, max_images=None, skip_difficult=True, transform=None):
        self.voc = voc
        self.classes = tuple(classes) if classes is not None else VOC_CLASSES
        unknown = set(self.classes) - set(VOC_CLASSES)
        if unknown:
            raise ValueError(f"unknown VOC classes {sorted(unknown)}; choose from {VOC_CLASSES}")
        self.class_names = self.classes
        self.length = len(voc) if max_images is None else min(max_images, len(voc))
        self.skip_difficult = skip_difficult
        self.transform = transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        from torchvision.transforms.functional import pil_to_tensor

        pil_image, annotation = self.voc[index]
        image = pil_to_tensor(pil_image.convert("RGB")).float() / 255  # [3, H, W]
        objects = annotation["annotation"].get("object", [])
        boxes, labels = [], []
        for obj in objects if isinstance(objects, list) else [objects]:
            if obj["name"] not in self.classes:
                continue
            if self.skip_difficult and obj.get("difficult", "0") == "1":
                continue
            b = obj["bndbox"]
            boxes.append(
                [float(b["xmin"]) - 1, float(b["ymin"]) - 1, float(b["xmax"]), float(b["ymax"])]
            )
            labels.append(self.classes.index(obj["name"]))
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def voc_dataset(
    root: str | Path,
    image_set: str = "train",
    classes=None,
    max_images: int | None = None,
    download: bool = False,
    year: str = "2012",
    transform=None,
) -> VOCDetectionDataset:
    """PASCAL VOC detection in the lab's target format (see :class:`VOCDetectionDataset`).

    Args:
        root: folder holding (or to receive) ``VOCdevkit/VOC{year}``, e.g. ``data/``.
        image_set: ``"train"``, ``"val"``, ``"trainval"``.
        classes: class names to keep, in label order; default all 20.
        max_images: use only the first images (quick runs).
        download: fetch the ~2 GB archive from the VOC mirror first.
        year: VOC year.
        transform: optional ``transform(image, target) -> (image, target)``.
    """
    from torchvision.datasets import VOCDetection

    try:
        voc = VOCDetection(str(root), year=year, image_set=image_set, download=download)
    except OSError as error:  # URLError (no network), disk full, a truncated archive
        raise FileNotFoundError(
            f"PASCAL VOC {year} could not be downloaded or unpacked into {Path(root)} ({error}). "
            f"Check the network and the free disk space, or unpack VOCtrainval_11-May-2012.tar "
            f"there yourself. Offline, use ShapesDataset (config p10_detection) instead."
        ) from None
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"PASCAL VOC {year} ({image_set}) was not found under {Path(root) / 'VOCdevkit'}. "
            f"Download it once with voc_dataset({str(root)!r}, download=True) (about 2 GB, needs "
            "network access), or unpack VOCtrainval_11-May-2012.tar there yourself. Offline, "
            "use ShapesDataset instead."
        ) from error
    return VOCDetectionDataset(voc, classes, max_images, transform=transform)


def write_voc_tree(
    root: str | Path,
    objects: list[list[tuple[str, int, int, int, int, int]]],
    size: tuple[int, int] = (96, 80),
    seed: int = 0,
) -> Path:
    """Write a tiny ``root/VOCdevkit/VOC2012`` in the real layout, for offline checks of the VOC path.

    One JPEG of random pixels per entry of ``objects``, named ``2012_000000.jpg``, ...; its XML
    annotation lists that entry's ``(class, xmin, ymin, xmax, ymax, difficult)`` boxes in VOC's
    1-based pixel indices; ``ImageSets/Main/train.txt`` and ``val.txt`` both list every image.
    :func:`voc_dataset` reads the tree like the real one (the tests and ``make gpu-check`` use it).

    Args:
        root: folder to write ``VOCdevkit`` into (created if missing).
        objects: per image, its boxes; an empty list gives an image without objects.
        size: ``(width, height)`` of every image.
        seed: seed of the pixels.

    Returns:
        ``root``, to pass as ``data.root``.
    """
    import numpy as np
    from PIL import Image

    base = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i, image_objects in enumerate(objects):
        name = f"2012_{i:06d}"
        names.append(name)
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(base / "JPEGImages" / f"{name}.jpg")
        xml_objects = "".join(
            f"<object><name>{c}</name><difficult>{d}</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for c, x0, y0, x1, y1, d in image_objects
        )
        (base / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{xml_objects}</annotation>"
        )
    for split in ("train", "val"):
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return Path(root)


class Compose:
    """Apply box-aware transforms ``t(image, target) -> (image, target)`` in order."""

    def __init__(self, *transforms):
        self.transforms = [t for t in transforms if t is not None]

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class Resize:
    """``resize`` as a picklable transform (DataLoader workers pickle the dataset)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        return resize(image, target, self.size)


# ---------------------------------------------------------------- from a config


def build_datasets(cfg: dict, augment: bool) -> tuple[Dataset, Dataset, tuple[str, ...]]:
    """Train and validation sets and the class names, from the config's ``data`` section.

    ``augment=False`` switches the horizontal flip off (the overfit harness). The flip draws
    from the global RNG, which the trainer saves and restores, so resumed runs flip the same.
    """
    data = cfg["data"]
    flip = RandomHorizontalFlip(data["flip"]) if augment and data["flip"] > 0 else None
    if data["dataset"] == "shapes":
        common = dict(
            image_size=data["image_size"],
            num_classes=data["num_classes"],
            min_objects=data["min_objects"],
            max_objects=data["max_objects"],
        )
        # Different seeds: the validation images are never drawn for training.
        train_set = ShapesDataset(
            data["train_images"], seed=data["train_seed"], transform=flip, **common
        )
        val_set = ShapesDataset(data["val_images"], seed=data["val_seed"], **common)
        return train_set, val_set, train_set.class_names
    if data["dataset"] == "voc":
        # VOC images differ in size; a batch must stack, so every image is resized to a square
        # (aspect ratio not kept: simple, and the boxes are scaled with the image).
        size = Resize(data["image_size"])
        classes = data["classes"] or VOC_CLASSES
        try:
            train_set = voc_dataset(
                data["root"],
                data["train_split"],
                classes,
                data["max_train_images"],
                download=data["download"],
                transform=Compose(size, flip),
            )
            val_set = voc_dataset(
                data["root"], data["val_split"], classes, data["max_val_images"], transform=size
            )
        except FileNotFoundError as error:
            raise DataError(
                f"{error} (or run with data.download=true, or use the offline config "
                "p10_detection)"
            ) from error
        return train_set, val_set, tuple(classes)
    raise ConfigError(f"data.dataset must be shapes or voc; got '{data['dataset']}'.")
