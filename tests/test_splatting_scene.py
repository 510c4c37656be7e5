"""The synthetic scene: ray intersections, ground-truth renders, SfM-like points, splits."""

import math

import pytest
import torch

from labkit.splatting.cameras import project_points, world_to_camera
from labkit.splatting.scene import (
    Box,
    Scene,
    Sphere,
    default_scene,
    make_scene_data,
    ray_box,
    ray_sphere,
    sample_surface_points,
)

D = torch.float64


def test_ray_sphere_hand_case():
    sphere = Sphere((0.0, 0.0, 0.0), 1.0, (1.0, 0.0, 0.0))
    origins = torch.tensor([[0.0, 0.0, 5.0], [3.0, 0.0, 5.0]], dtype=D)
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]], dtype=D)
    t, normals = ray_sphere(origins, directions, sphere)
    assert t[0].item() == pytest.approx(4.0)  # hits the top at z = 1
    assert torch.allclose(normals[0], torch.tensor([0.0, 0.0, 1.0], dtype=D))
    assert math.isinf(t[1].item())  # passes at distance 3 > radius


def test_ray_box_hand_case():
    box = Box((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), (0.0, 1.0, 0.0))
    origins = torch.tensor([[5.0, 0.2, 0.3], [5.0, 2.0, 0.0], [0.5, 0.5, 4.0]], dtype=D)
    directions = torch.tensor([[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]], dtype=D)
    t, normals = ray_box(origins, directions, box)
    assert t[0].item() == pytest.approx(4.0)  # enters the face x = 1
    assert torch.allclose(normals[0], torch.tensor([1.0, 0.0, 0.0], dtype=D))
    assert math.isinf(t[1].item())
    assert t[2].item() == pytest.approx(3.0)
    assert torch.allclose(normals[2], torch.tensor([0.0, 0.0, 1.0], dtype=D))


def test_render_scene_background_and_object_colour():
    scene = Scene(
        spheres=[Sphere((0.0, 0.0, 0.0), 0.5, (1.0, 0.0, 0.0))], boxes=[], light=(0.0, 0.0, 1.0)
    )
    data = make_scene_data(scene, size=16, num_train=2, num_test=2, num_points=50, supersample=1)
    image = data.train_images[0]
    assert image.shape == (16, 16, 3) and image.min() >= 0 and image.max() <= 1
    assert torch.equal(image[0, 0], torch.ones(3))  # white background in the corner
    centre = image[7:9, 7:9].reshape(-1, 3)
    assert (centre[:, 0] > 0.3).all() and (centre[:, 1:] == 0).all()  # red sphere, Lambert-shaded


def test_points_lie_on_visible_surfaces_and_are_deterministic():
    scene = default_scene()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    points, colors = sample_surface_points(scene, 500, gen(), position_noise=0.0, color_noise=0.0)
    again, _ = sample_surface_points(scene, 500, gen(), position_noise=0.0, color_noise=0.0)
    assert torch.equal(points, again)
    assert 0 < len(points) < 500 and colors.shape == points.shape
    # No point on the floor's underside (z = -0.1, |x|, |y| < 1.2): no camera sees it.
    underside = ((points[:, 2] + 0.1).abs() < 1e-5) & (points[:, :2].abs() < 1.2 - 1e-5).all(1)
    assert not underside.any() and (points[:, 2] < -0.1 + 1e-5).sum() == 0
    # Every point is on some primitive's surface.
    distance = torch.full((len(points),), float("inf"))
    for s in scene.spheres:
        distance = torch.minimum(
            distance, ((points - torch.tensor(s.center)).norm(dim=1) - s.radius).abs()
        )
    for b in scene.boxes:
        lo, hi = torch.tensor(b.lo), torch.tensor(b.hi)
        inside = ((points >= lo - 1e-5) & (points <= hi + 1e-5)).all(1)
        on_face = ((points - lo).abs().min(1).values < 1e-5) | (
            (points - hi).abs().min(1).values < 1e-5
        )
        distance = torch.where(inside & on_face, torch.zeros_like(distance), distance)
    assert distance.max() < 1e-5


def test_scene_data_splits_and_projection_consistency():
    data = make_scene_data(size=24, num_train=4, num_test=2, num_points=200, supersample=1)
    assert data.train_images.shape == (4, 24, 24, 3) and data.test_images.shape == (2, 24, 24, 3)
    train_centres = torch.stack([c.center for c in data.train_cameras])
    for cam in data.test_cameras:  # held-out cameras are not training cameras
        assert (train_centres - cam.center).norm(dim=1).min() > 0.5
    # The red sphere's centre projects onto a red pixel in every view (the ray caster and the
    # projection agree on the camera model).
    red = torch.tensor([default_scene().spheres[0].center])
    for cam, image in zip(data.train_cameras, data.train_images):
        u, v = project_points(world_to_camera(red, cam), cam)[0]
        pixel = image[int(v), int(u)]
        assert pixel[0] > pixel[1] and pixel[0] > pixel[2]
