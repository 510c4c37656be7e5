"""The unlabelled pool: P10's synthetic shapes, skewed the way a robot's logs are.

A robot records far more frames than anyone can label, and most of them are boring: an empty
corridor, the same parked car again. :class:`SkewedShapesPool` imitates that with
:class:`~labkit.detection.dataset.ShapesDataset` scenes of three kinds:

* ``empty``  — background only (gradients, lines, noise), nothing to detect;
* ``common`` — one or two circles, the class the detector sees all the time;
* ``rare``   — up to three objects of all three classes: the only frames with squares and
  triangles, so the only frames that teach the two rare classes.

and two more twists from real logs:

* **bursts**: every scene is recorded ``burst`` times in a row (consecutive frames), the copies
  differing only by fresh pixel noise and a brightness change. A top-K selector that likes one
  frame likes its copies as much, and spends its budget on near-duplicates;
* the test set (``data.val_*`` in the config, built by P10's ``build_datasets``) is the
  ordinary balanced ShapesDataset: what we want is a detector that finds *every* class, and
  mAP@0.5 averages over classes, so the rare classes weigh 2/3 of the score.

Random sampling labels what the log holds — mostly empty and circle frames; a selector that finds
the rare frames learns the rare classes from far fewer labels. That is the effect the phase
measures (and, with ``fractions: [0, 0, 1]``, a balanced pool shows it mostly vanishing).

Frames are drawn once and kept in memory (:func:`materialise`): the pool is scored every round,
and 64-px frames cost 12 KiB each. Explained in notebooks/40_active_learning_detection.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from labkit.detection.dataset import ShapesDataset

__all__ = ["POOL_KINDS", "SkewedShapesPool", "InMemoryDetectionSet", "LabelledSet", "materialise"]

POOL_KINDS = ("empty", "common", "rare")


class SkewedShapesPool(Dataset):
    """A log of ``num_images`` frames: scenes of the three :data:`POOL_KINDS`, each seen ``burst``
    times in a row.

    Frame ``i`` shows scene ``i // burst`` (copy ``i % burst``; copy 0 is the clean frame). Scene
    kinds are assigned with exact counts (``round(fraction * scenes)``, the rest ``empty``) in an
    order shuffled by ``seed``, so the same arguments always give the same log.

    Args:
        num_images: frames in the log (the last scene may have fewer copies).
        image_size: square frames, a multiple of the detector's stride.
        fractions: shares of ``(empty, common, rare)`` scenes, summing to 1.
        burst: copies of each scene (1: every frame a different scene).
        jitter: std of the extra pixel noise of copies 1..burst-1 (brightness changes by up to
            ``2 * jitter``); boxes are unchanged.
        rare_max_objects: objects in a rare scene (1 to this many, all three classes).
        seed: the log's seed (scenes, kinds, copies); independent of the experiment's seeds.

    Items are ``(image [3, S, S] in [0, 1], {"boxes": [K, 4] xyxy, "labels": [K]})``, as in P10.
    ``kinds[i]`` names frame i's kind, ``scenes[i]`` its scene.
    """

    def __init__(
        self,
        num_images: int,
        image_size: int = 64,
        fractions: tuple[float, float, float] = (0.75, 0.17, 0.08),
        burst: int = 3,
        jitter: float = 0.03,
        rare_max_objects: int = 3,
        seed: int = 0,
    ):
        if len(fractions) != len(POOL_KINDS) or min(fractions) < 0:
            raise ValueError(
                f"fractions must be 3 shares (empty, common, rare) >= 0, got {fractions}"
            )
        if abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(
                f"fractions must sum to 1, got {list(fractions)} (sum {sum(fractions)})"
            )
        if num_images < 1 or burst < 1:
            raise ValueError(f"need num_images >= 1 and burst >= 1, got {num_images}, {burst}")
        self.num_images, self.image_size, self.burst, self.jitter = (
            num_images,
            image_size,
            burst,
            jitter,
        )
        self.seed = seed
        self.class_names = ShapesDataset(1, image_size=image_size).class_names
        # One ShapesDataset per kind, each with its own seed; scene j of a kind is its item j.
        size = dict(image_size=image_size)
        self._sources = {
            "empty": ShapesDataset(num_images, **size, min_objects=0, max_objects=0, seed=3 * seed),
            "common": ShapesDataset(
                num_images, **size, num_classes=1, min_objects=1, max_objects=2, seed=3 * seed + 1
            ),
            "rare": ShapesDataset(
                num_images, **size, min_objects=1, max_objects=rare_max_objects, seed=3 * seed + 2
            ),
        }
        num_scenes = -(-num_images // burst)  # ceil
        counts = [round(f * num_scenes) for f in fractions[1:]]
        counts = [num_scenes - sum(counts), *counts]  # rounding slack goes to "empty"
        kinds = [kind for kind, n in zip(POOL_KINDS, counts, strict=True) for _ in range(n)]
        order = torch.randperm(num_scenes, generator=torch.Generator().manual_seed(seed)).tolist()
        self.scene_kinds = [kinds[j] for j in order]  # kind of scene j
        self.scenes = [i // burst for i in range(num_images)]
        self.kinds = [self.scene_kinds[s] for s in self.scenes]

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"frame {index} out of range for a pool of {self.num_images}")
        scene, copy = divmod(index, self.burst)
        image, target = self._sources[self.scene_kinds[scene]][scene]
        if copy:  # a later frame of the same scene: new sensor noise, a slight exposure change
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + index) * 7 + 1)
            gain = 1 + self.jitter * (2 * torch.rand(1, generator=g) - 1) * 2
            noise = self.jitter * torch.randn(image.shape, generator=g)
            image = (image * gain + noise).clamp(0, 1)
        return image, target

    def composition(self, ids: list[int] | None = None) -> dict[str, int]:
        """How many frames of each kind ``ids`` (default: the whole pool) hold."""
        counts = Counter(self.kinds[i] for i in (range(self.num_images) if ids is None else ids))
        return {kind: counts.get(kind, 0) for kind in POOL_KINDS}


@dataclass
class InMemoryDetectionSet(Dataset):
    """Frames drawn once: ``images [N, 3, S, S]`` and N target dicts; attributes of the source
    (``kinds``, ``class_names``, ...) stay reachable through ``source``."""

    images: Tensor
    targets: list[dict[str, Tensor]]
    source: Dataset | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.images[index], self.targets[index]


def materialise(dataset: Dataset) -> InMemoryDetectionSet:
    """Draw every item of ``dataset`` once into memory (a 600-frame 64-px pool: ~30 MB, ~2 s)."""
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([image for image, _ in items])  # [N, 3, S, S]
    return InMemoryDetectionSet(images, [target for _, target in items], dataset)


class LabelledSet(Dataset):
    """The frames of ``base`` whose ids are in ``ids`` (in that order), optionally transformed
    (e.g. P10's random horizontal flip); what one round trains on."""

    def __init__(self, base: Dataset, ids: list[int], transform=None):
        self.base, self.ids, self.transform = base, list(ids), transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.base[self.ids[index]]
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
