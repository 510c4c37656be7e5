"""Cameras: look_at, projection, its Jacobian, EWA covariance projection, pixel rays."""

import pytest
import torch

from labkit.splatting.cameras import (
    Camera,
    look_at,
    orbit_cameras,
    pixel_rays,
    project_covariances,
    project_points,
    projection_jacobian,
    world_to_camera,
)


def _camera(dtype=torch.float64) -> Camera:
    R, t = look_at(
        torch.tensor([3.0, 1.0, 2.0], dtype=dtype),
        torch.zeros(3, dtype=dtype),
        torch.tensor([0.0, 0.0, 1.0], dtype=dtype),
    )
    return Camera(60.0, 55.0, 32.0, 30.0, 64, 60, R, t)


def test_look_at_puts_target_on_axis_and_eye_at_origin():
    cam = _camera()
    eye = torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
    assert torch.allclose(
        world_to_camera(eye[None], cam), torch.zeros(1, 3, dtype=torch.float64), atol=1e-12
    )
    assert torch.allclose(cam.center, eye)
    target_cam = world_to_camera(torch.zeros(1, 3, dtype=torch.float64), cam)[0]
    assert torch.allclose(target_cam[:2], torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert target_cam[2] == pytest.approx(eye.norm().item())  # in front, at the distance
    assert torch.allclose(
        project_points(target_cam[None], cam)[0], torch.tensor([32.0, 30.0], dtype=torch.float64)
    )
    assert torch.linalg.det(cam.R).item() == pytest.approx(1.0)
    # World up (+z) appears as image "up", i.e. negative v.
    above = world_to_camera(torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64), cam)
    assert project_points(above, cam)[0, 1] < 30.0


def test_look_at_rejects_parallel_up():
    with pytest.raises(ValueError, match="parallel"):
        look_at(torch.tensor([0.0, 0.0, 5.0]), torch.zeros(3))


def test_orbit_cameras_all_at_radius_looking_at_target():
    cams = orbit_cameras(6, radius=4.0, elevation_deg=30.0, width=32, height=32)
    for cam in cams:
        assert cam.center.norm().item() == pytest.approx(4.0, abs=1e-5)
        assert cam.center[2].item() == pytest.approx(2.0, abs=1e-5)  # 4 sin 30°
        uv = project_points(world_to_camera(torch.zeros(1, 3), cam), cam)
        assert torch.allclose(uv, torch.tensor([[16.0, 16.0]]), atol=1e-4)


def test_jacobian_matches_autograd():
    cam = _camera()
    points = torch.tensor(
        [[0.3, -0.2, 2.0], [-0.5, 0.4, 3.5], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    J = projection_jacobian(points, cam, clamp=False)
    for i, p in enumerate(points):
        numeric = torch.autograd.functional.jacobian(lambda q: project_points(q[None], cam)[0], p)
        assert torch.allclose(J[i], numeric, atol=1e-12)
    # Inside the field of view the 3DGS clamp changes nothing.
    assert torch.allclose(projection_jacobian(points, cam, clamp=True), J)


def test_jacobian_clamp_far_outside_the_view():
    cam = _camera()
    far_right = torch.tensor([[10.0, 0.0, 1.0]], dtype=torch.float64)  # x/z = 10, limit 1.3 · 32/60
    J = projection_jacobian(far_right, cam, clamp=True)
    assert J[0, 0, 2].item() == pytest.approx(-cam.fx * 1.3 * 32 / 60)


def test_projected_covariance_is_first_order_push_forward():
    # Σ' = J W Σ Wᵀ Jᵀ (+ low pass): compare with the covariance of projected samples of a small
    # Gaussian, where the linearisation is accurate.
    cam = _camera()
    mean = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    A = 5 * torch.tensor(
        [[0.02, 0.0, 0.0], [0.01, 0.015, 0.0], [0.0, 0.005, 0.01]], dtype=torch.float64
    )
    cov = A @ A.T
    ewa = project_covariances(cov[None], world_to_camera(mean[None], cam), cam, low_pass=0.0)[0]
    samples = (
        mean
        + torch.randn(200_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        @ A.T
    )
    uv = project_points(world_to_camera(samples, cam), cam)
    sampled = torch.cov(uv.T)
    assert ewa[0, 0] > 1.0 and ewa[1, 1] > 1.0  # a few pixels wide: a meaningful comparison
    assert torch.allclose(ewa, sampled, atol=0.01 * sampled.diagonal().max().item())
    low = project_covariances(cov[None], world_to_camera(mean[None], cam), cam, low_pass=0.3)[0]
    assert torch.allclose(low - ewa, 0.3 * torch.eye(2, dtype=torch.float64))


def test_pixel_rays_project_back_to_pixel_centres():
    cam = _camera()
    origins, directions = pixel_rays(cam)
    assert directions.shape == (60, 64, 3)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(60, 64, dtype=torch.float64))
    points = (origins + 2.5 * directions).reshape(-1, 3)
    uv = project_points(world_to_camera(points, cam), cam).reshape(60, 64, 2)
    assert torch.allclose(uv[7, 11], torch.tensor([11.5, 7.5], dtype=torch.float64))
    assert torch.allclose(uv[-1, -1], torch.tensor([63.5, 59.5], dtype=torch.float64))
