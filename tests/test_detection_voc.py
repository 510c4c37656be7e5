"""The VOC path offline: a tiny VOC-layout tree (generated JPEGs and XML annotations) goes
through p10_voc's data loading and a few CPU steps, so a first GPU run cannot fail on parsing;
a failed download and a corrupt backbone_weights file are one-paragraph errors."""

import urllib.error

import pytest
import torch

from labkit.detection.dataset import voc_dataset, write_voc_tree
from labkit.train import main


class NotATensor:
    """A class a weights_only load refuses: unpickling it would import and run code."""


OBJECTS = [  # per image: (class, xmin, ymin, xmax, ymax, difficult)
    [("person", 10, 12, 40, 60, 0), ("car", 50, 30, 90, 70, 0), ("dog", 5, 5, 20, 20, 0)],
    [("car", 20, 20, 70, 50, 0), ("person", 60, 10, 80, 75, 1)],  # a difficult person
    [("person", 30, 15, 60, 70, 0)],
    [("cat", 10, 10, 50, 50, 0)],  # only a class outside the subset: an image without boxes
]


def test_voc_parsing_keeps_the_subset_and_skips_difficult(tmp_path):
    write_voc_tree(tmp_path, OBJECTS)
    data = voc_dataset(tmp_path, "train", classes=["person", "car"])
    image, target = data[0]
    assert image.shape == (3, 80, 96) and 0 <= image.min() and image.max() <= 1
    # VOC pixel indices start at 1: xmin - 1; the dog is not in the subset.
    assert target["boxes"].tolist() == [[9.0, 11.0, 40.0, 60.0], [49.0, 29.0, 90.0, 70.0]]
    assert target["labels"].tolist() == [0, 1]
    assert data[1][1]["labels"].tolist() == [1]  # the difficult person is skipped
    assert data[3][1]["boxes"].shape == (0, 4)


def test_p10_voc_trains_a_few_cpu_steps_on_a_tiny_tree(tmp_path):
    write_voc_tree(tmp_path / "data", OBJECTS)
    code = main([
        "p10_voc", f"data.root={tmp_path / 'data'}", "data.classes=[person, car]",
        "model.pretrained=false", "model.backbone=resnet18", "model.head_channels=16",
        "data.image_size=64", "data.batch_size=2", "data.eval_batch_size=2",
        "data.num_workers=0", "trainer.max_steps=3", "trainer.eval_every=3",
        "trainer.ckpt_every=3", "model.unfreeze_at=2", "optim.warmup_steps=1",
        "device=cpu", "--runs-dir", str(tmp_path / "runs"),
    ])  # fmt: skip
    assert code == 0
    (run_dir,) = (tmp_path / "runs" / "p10_voc").iterdir()
    assert (run_dir / "checkpoints" / "step_00000003.pt").is_file()


def test_failed_voc_download_is_one_paragraph_and_leaves_no_run_folder(
    tmp_path, capsys, monkeypatch
):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    monkeypatch.setattr("torchvision.datasets.voc.download_and_extract_archive", offline)
    code = main([
        "p10_voc", f"data.root={tmp_path}", "data.download=true", "model.pretrained=false",
        "device=cpu", "--runs-dir", str(tmp_path / "runs"),
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "could not be downloaded" in err
    assert not list((tmp_path / "runs").rglob("*.yaml"))


@pytest.mark.parametrize("content", [b"\x00garbage" * 50, "pickle"])
def test_corrupt_backbone_weights_are_one_paragraph(tmp_path, capsys, content):
    path = tmp_path / "weights.pt"
    if content == "pickle":
        torch.save({"layer": NotATensor()}, path)  # an object a safe load refuses
    else:
        path.write_bytes(content)
    code = main([
        "p10_detection", f"model.backbone_weights={path}", "trainer.max_steps=1",
        "device=cpu", "--runs-dir", str(tmp_path / "runs"),
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "backbone_weights" in err and "weights_only=False" in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.yaml"))
