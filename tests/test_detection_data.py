"""Synthetic shapes dataset, box-aware transforms, collate, and the VOC wrapper's error."""

import pytest
import torch

from labkit.detection.dataset import (
    SHAPE_CLASSES,
    RandomHorizontalFlip,
    ShapesDataset,
    _mask_to_box,
    _shape_mask,
    detection_collate,
    horizontal_flip,
    resize,
    voc_dataset,
)


def test_images_and_boxes_are_well_formed():
    ds = ShapesDataset(12, image_size=96, num_classes=3, min_objects=1, max_objects=4, seed=0)
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        boxes, labels = target["boxes"], target["labels"]
        assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
        assert 1 <= len(boxes) <= 4 and boxes.shape == (len(labels), 4)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 96).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert ((0 <= labels) & (labels < 3)).all()


def test_deterministic_per_seed_and_index():
    a, b, c = ShapesDataset(3, seed=1), ShapesDataset(3, seed=1), ShapesDataset(3, seed=2)
    image_a, target_a = a[2]
    image_b, target_b = b[2]
    assert torch.equal(image_a, image_b) and torch.equal(target_a["boxes"], target_b["boxes"])
    assert torch.equal(a[2][0], image_a)  # same item twice: the same image
    assert not torch.equal(c[2][0], image_a)  # another seed: another image
    assert not torch.equal(a[1][0], image_a)  # another index: another image


def test_shape_boxes_are_tight():
    # The box of each shape touches its pixels on all four sides and contains all of them.
    for kind in range(len(SHAPE_CLASSES)):
        mask = _shape_mask(kind, cx=30.3, cy=25.7, size=21, height=64, width=64)
        x1, y1, x2, y2 = _mask_to_box(mask).long().tolist()
        assert mask[:, x1].any() and mask[:, x2 - 1].any() and mask[y1].any() and mask[y2 - 1].any()
        assert mask[y1:y2, x1:x2].sum() == mask.sum()


def test_num_classes_limits_the_shapes_and_bad_arguments_fail():
    ds = ShapesDataset(10, num_classes=1, seed=3)
    assert all((ds[i][1]["labels"] == 0).all() for i in range(10))
    with pytest.raises(ValueError, match="num_classes"):
        ShapesDataset(1, num_classes=4)


def test_horizontal_flip_hand_computed_and_involution():
    image = torch.arange(10.0).view(1, 1, 10).expand(3, 2, 10)
    target = {"boxes": torch.tensor([[1.0, 0.0, 3.0, 2.0]]), "labels": torch.tensor([0])}
    flipped, flipped_target = horizontal_flip(image, target)
    # Width 10: x1' = 10 - 3 = 7, x2' = 10 - 1 = 9; the pixels under the box move with it.
    assert flipped_target["boxes"].tolist() == [[7.0, 0.0, 9.0, 2.0]]
    assert torch.equal(flipped[:, :, 7:9], image[:, :, 1:3].flip(-1))
    back, back_target = horizontal_flip(flipped, flipped_target)
    assert torch.equal(back, image) and torch.equal(back_target["boxes"], target["boxes"])


def test_random_flip_is_reproducible_with_a_generator():
    image, target = ShapesDataset(1)[0]
    runs = []
    for _ in range(2):
        flip = RandomHorizontalFlip(0.5, torch.Generator().manual_seed(0))
        runs.append([flip(image, target)[1]["boxes"].tolist() for _ in range(6)])
    assert runs[0] == runs[1]


def test_resize_scales_boxes():
    image, target = torch.rand(3, 40, 80), {
        "boxes": torch.tensor([[10.0, 4.0, 20.0, 8.0]]),
        "labels": torch.tensor([1]),
    }
    resized, resized_target = resize(image, target, (20, 160))  # height / 2, width x 2
    assert resized.shape == (3, 20, 160)
    assert resized_target["boxes"].tolist() == [[20.0, 2.0, 40.0, 4.0]]
    assert resized_target["labels"] is target["labels"]


def test_collate_stacks_images_and_keeps_targets():
    ds = ShapesDataset(3, image_size=64)
    images, targets = detection_collate([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 3, 64, 64) and len(targets) == 3
    with pytest.raises(ValueError, match="same size"):
        detection_collate([ds[0], (torch.zeros(3, 32, 32), ds[1][1])])


def test_voc_without_data_says_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        voc_dataset(tmp_path, "train")
