"""TinyDetector shapes, weight loading, freezing, and a tiny overfit run; drawing boxes."""

import math
import urllib.error

import pytest
import torch
import torchvision

from labkit.detection import model as model_module
from labkit.detection.assign import decode_predictions
from labkit.detection.dataset import ShapesDataset, detection_collate
from labkit.detection.losses import detection_loss
from labkit.detection.model import PRIOR_PROBABILITY, TinyDetector
from labkit.detection.visualize import draw_detections, prediction_grid


@pytest.mark.parametrize("backbone, stride", [("resnet18", 8), ("resnet18", 16), ("resnet34", 8)])
def test_forward_shapes(backbone, stride):
    model = TinyDetector(num_classes=3, backbone=backbone, stride=stride, head_channels=32)
    out = model(torch.rand(2, 3, 64, 96))
    assert out["cls_logits"].shape == (2, 3, 64 // stride, 96 // stride)
    assert out["box_deltas"].shape == (2, 4, 64 // stride, 96 // stride)


def test_focal_prior_initialisation():
    # Lin et al. 2017: every cell starts with p(object) = π = 0.01.
    model = TinyDetector(num_classes=2, head_channels=16)
    probabilities = torch.sigmoid(model.cls_head.bias)
    torch.testing.assert_close(probabilities, torch.full((2,), PRIOR_PROBABILITY))


def test_loads_a_local_backbone_state_dict(tmp_path):
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(resnet.state_dict(), path)
    model = TinyDetector(num_classes=3, backbone_weights=path, head_channels=16)
    assert torch.equal(model.backbone[0].weight, resnet.conv1.weight)  # conv1
    assert torch.equal(model.backbone[5][0].conv1.weight, resnet.layer2[0].conv1.weight)
    # A state dict of another architecture is refused with a message saying what to save.
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(RuntimeError, match="state dict"):
        TinyDetector(num_classes=3, backbone_weights=path)


def test_download_failure_explains_how_to_continue(monkeypatch):
    def offline(weights=None):
        raise urllib.error.URLError("no network")

    builder, weights = model_module._BACKBONES["resnet18"]
    monkeypatch.setitem(model_module._BACKBONES, "resnet18", (offline, weights))
    with pytest.raises(RuntimeError, match="model.pretrained=false"):
        TinyDetector(num_classes=3, pretrained=True)


def test_freeze_unfreeze_and_param_groups():
    model = TinyDetector(num_classes=3, head_channels=16)  # frozen by default
    model.train()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not model.backbone.training  # frozen BatchNorm statistics stay fixed
    assert [g["name"] for g in model.param_groups(1e-4, 1e-3)] == ["head"]
    model.set_backbone_trainable(True)
    model.train()
    assert model.backbone.training
    groups = model.param_groups(1e-4, 1e-3)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 1e-4), ("head", 1e-3)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    torch.optim.SGD(groups, lr=0.1)  # accepted by an optimizer as is


def test_tiny_overfit_loss_falls():
    # Two 64-px images; the detection loss must fall clearly in a few dozen steps.
    torch.manual_seed(0)
    ds = ShapesDataset(2, image_size=64, min_size=16, max_size=28, max_objects=2, seed=0)
    images, targets = detection_collate([ds[0], ds[1]])
    model = TinyDetector(num_classes=3, freeze_backbone=False, head_channels=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss, _ = detection_loss(model(images), targets, stride=model.stride)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.3 * losses[0], losses
    model.eval()
    with torch.no_grad():
        out = model(images)
    dets = decode_predictions(out["cls_logits"], out["box_deltas"], model.stride, score_thresh=0.05)
    assert len(dets) == 2 and all(d["boxes"].shape[1] == 4 for d in dets)


def test_drawing_returns_uint8_images():
    ds = ShapesDataset(2, image_size=64)
    images, targets = detection_collate([ds[0], ds[1]])
    preds = [{**t, "scores": torch.full((len(t["labels"]),), 0.9)} for t in targets]
    drawn = draw_detections(images[0], preds[0], targets[0], class_names=ds.class_names)
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 64, 64)
    assert not torch.equal(drawn, (images[0] * 255).round().to(torch.uint8))  # boxes were drawn
    grid = prediction_grid(images, preds, targets, ds.class_names, nrow=2)
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    with pytest.raises(ValueError, match="predictions"):
        prediction_grid(images, preds[:1])


def test_drawing_labels_only_the_best_max_labels():
    # Ten copies of one box, scores 0.0 .. 0.9: with max_labels=2 only two labels are written;
    # the boxes themselves are all drawn either way. A label is a filled rectangle in the
    # class colour, so labelled drawings differ from unlabelled ones.
    image = torch.full((3, 64, 64), 0.5)
    boxes = torch.tensor([[10.0, 20.0, 40.0, 50.0]]).repeat(10, 1)
    pred = {"boxes": boxes, "scores": torch.arange(10) / 10, "labels": torch.zeros(10, dtype=torch.int64)}  # fmt: skip
    kwargs = dict(score_thresh=0.0, scale=4, text="score")
    none = draw_detections(image, pred, score_thresh=0.0, scale=4, text="none")
    two = draw_detections(image, pred, max_labels=2, **kwargs)
    every = draw_detections(image, pred, **kwargs)
    changed = lambda a, b: int((a != b).any(0).sum())  # noqa: E731
    one = draw_detections(image, pred, max_labels=1, **kwargs)
    assert 0 < changed(one, none) < changed(two, none) < changed(every, none)


def test_ground_truth_is_drawn_thin_and_light():
    # On a black image, the dashed ground-truth line of a class is lighter than the class colour
    # (moved towards white) and at most one pixel thick at width 2.
    from labkit.detection.visualize import class_color

    image = torch.zeros(3, 40, 40)
    target = {"boxes": torch.tensor([[5.0, 5.0, 35.0, 35.0]]), "labels": torch.tensor([0])}
    drawn = draw_detections(image, target=target, text="none").float()
    column = drawn[:, :, 20]  # crosses the top and bottom edges at y = 5 and y = 35
    rows = column.sum(0).nonzero().squeeze(1).tolist()
    assert all(abs(y - 5) <= 1 or abs(y - 35) <= 1 for y in rows)
    brightest = drawn.sum(0).max()
    assert brightest > sum(class_color(0)), "ground truth should be lighter than its class colour"
