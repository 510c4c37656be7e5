"""Pinhole cameras, and how a 3D Gaussian becomes a 2D one on the image (EWA splatting).

Conventions:

* World frame: z up. Camera frame: OpenCV's, x right, y down, z forward (looking direction), so a
  point in front of the camera has ``z > 0``.
* ``Camera.R, Camera.t`` map world to camera: ``p_cam = R p_world + t``. The camera centre in the
  world is ``-Rᵀ t``.
* Image coordinates ``(u, v)`` in pixels, u right, v down; pixel ``(row i, col j)`` covers
  ``[j, j+1] × [i, i+1]`` and is sampled at its centre ``(j + 0.5, i + 0.5)``; the principal
  point ``(cx, cy) = (W/2, H/2)`` by default is the centre of the image.

The key step (Zwicker et al. 2001, "EWA Volume Splatting", eq. 31; 3DGS eq. 5): a Gaussian with
world covariance Σ at camera-space mean ``t = (x, y, z)`` lands on the image, to first order, as
a 2D Gaussian with covariance ``Σ' = J W Σ Wᵀ Jᵀ``: W is the world-to-camera rotation and J the
Jacobian of the perspective projection at t (the projection is not affine, so it is linearised).

Explained in notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

__all__ = [
    "Camera",
    "look_at",
    "orbit_cameras",
    "world_to_camera",
    "project_points",
    "projection_jacobian",
    "project_covariances",
    "pixel_rays",
]


@dataclass
class Camera:
    """A pinhole camera: intrinsics ``fx, fy, cx, cy`` (pixels), image size, extrinsics ``R, t``.

    ``R [3, 3]`` and ``t [3]`` map world points to camera points (OpenCV axes, see module doc).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    R: Tensor
    t: Tensor

    @property
    def center(self) -> Tensor:
        """``[3]`` camera centre in world coordinates, ``-Rᵀ t``."""
        return -self.R.T @ self.t

    @property
    def tan_half_fov(self) -> tuple[float, float]:
        """``tan(fov_x / 2), tan(fov_y / 2)`` = half image size over focal length."""
        return self.width / (2 * self.fx), self.height / (2 * self.fy)

    def to(self, device: torch.device | str) -> Camera:
        """The same camera with ``R`` and ``t`` on ``device`` (the intrinsics are plain numbers)."""
        return replace(self, R=self.R.to(device), t=self.t.to(device))


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """World-to-camera ``R, t`` of a camera at ``eye`` looking at ``target`` (OpenCV axes).

    The camera's rows in the world are ``right = forward × up``, ``down = forward × right``,
    ``forward``; stacked as rows they form R (a right-handed frame: right × down = forward).

    Args:
        eye, target: ``[3]`` world points. up: ``[3]`` world up, default +z; must not be parallel
            to the viewing direction.

    Returns:
        ``R [3, 3]``, ``t [3]`` with ``R @ eye + t = 0`` and ``target`` on the optical axis.
    """
    z_up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device)
    up = z_up if up is None else up.to(eye)  # the eye's dtype and device
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-6:
        raise ValueError("look_at: the viewing direction is parallel to `up`; pass another up")
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])  # rows: the camera axes in world coordinates
    return R, -R @ eye


def orbit_cameras(
    num: int,
    radius: float,
    elevation_deg: float,
    width: int = 64,
    height: int = 64,
    fov_deg: float = 50.0,
    azimuth_offset_deg: float = 0.0,
    target: tuple[float, float, float] = (0.0, 0.0, 0.0),
    device: torch.device | str = "cpu",
) -> list[Camera]:
    """``num`` cameras evenly spaced in azimuth on a circle around ``target``, all looking at it.

    Args:
        num: number of cameras. radius: distance from ``target``. elevation_deg: angle above the
            horizontal plane. fov_deg: horizontal field of view. azimuth_offset_deg: where the
            first camera sits (shift a second orbit by half a step for held-out views).
        device: where the cameras' ``R`` and ``t`` live.
    """
    fx = width / (2 * math.tan(math.radians(fov_deg) / 2))
    center = torch.tensor(target, device=device)
    elevation = math.radians(elevation_deg)
    cameras = []
    for k in range(num):
        azimuth = math.radians(azimuth_offset_deg + 360.0 * k / num)
        eye = center + radius * torch.tensor(
            [
                math.cos(elevation) * math.cos(azimuth),
                math.cos(elevation) * math.sin(azimuth),
                math.sin(elevation),
            ],
            device=device,
        )
        R, t = look_at(eye, center)
        cameras.append(Camera(fx, fx, width / 2, height / 2, width, height, R, t))
    return cameras


# ---------------------------------------------------------------- projecting points


def world_to_camera(points: Tensor, camera: Camera) -> Tensor:
    """``p_cam = R p + t``. ``[N, 3]`` world → ``[N, 3]`` camera coordinates."""
    return points @ camera.R.T.to(points) + camera.t.to(points)


def project_points(points_cam: Tensor, camera: Camera) -> Tensor:
    """Perspective projection ``u = fx x / z + cx, v = fy y / z + cy``. ``[N, 3]`` → ``[N, 2]``."""
    x, y, z = points_cam.unbind(-1)
    return torch.stack([camera.fx * x / z + camera.cx, camera.fy * y / z + camera.cy], -1)


def projection_jacobian(points_cam: Tensor, camera: Camera, clamp: bool = True) -> Tensor:
    """Jacobian ``J = ∂(u, v) / ∂(x, y, z)`` of ``project_points`` at each camera-space point.

    ``J = [[fx/z, 0, -fx x/z²], [0, fy/z, -fy y/z²]]`` (Zwicker et al. 2001, eq. 29; the third row
    of the 3×3 version is dropped since only the image-plane covariance is needed).

    Args:
        points_cam: ``[N, 3]`` camera-space means, ``z > 0``.
        clamp: as 3DGS (``computeCov2D``), clamp ``x/z`` and ``y/z`` to 1.3 × the half field of
            view first. Far outside the image the linearisation is poor and 1/z² terms blow up
            the footprint of a Gaussian that is barely on screen; clamping bounds that.

    Returns:
        ``[N, 2, 3]``.
    """
    x, y, z = points_cam.unbind(-1)
    if clamp:
        lim_x, lim_y = (1.3 * t for t in camera.tan_half_fov)
        x = (x / z).clamp(-lim_x, lim_x) * z
        y = (y / z).clamp(-lim_y, lim_y) * z
    zeros = torch.zeros_like(z)
    row_u = torch.stack([camera.fx / z, zeros, -camera.fx * x / z**2], -1)
    row_v = torch.stack([zeros, camera.fy / z, -camera.fy * y / z**2], -1)
    return torch.stack([row_u, row_v], -2)


def project_covariances(
    covariances: Tensor, points_cam: Tensor, camera: Camera, low_pass: float = 0.3
) -> Tensor:
    """Image-space covariance ``Σ' = J W Σ Wᵀ Jᵀ + low_pass · I`` (EWA; 3DGS eq. 5).

    Args:
        covariances: ``[N, 3, 3]`` world-space Σ.
        points_cam: ``[N, 3]`` camera-space means (where J is evaluated).
        low_pass: variance in pixels² added to the diagonal. 3DGS adds 0.3: it makes every splat
            at least about one pixel wide, so a tiny or edge-on Gaussian cannot fall between pixel
            centres and vanish (aliasing), and keeps Σ' invertible.

    Returns:
        ``[N, 2, 2]`` symmetric positive definite, in pixels².
    """
    J = projection_jacobian(points_cam, camera)  # [N, 2, 3]
    W = camera.R.to(covariances)
    JW = J @ W  # [N, 2, 3]
    cov2d = JW @ covariances @ JW.transpose(-1, -2)  # [N, 2, 2]
    return cov2d + low_pass * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)


# ---------------------------------------------------------------- the other way: pixels to rays


def pixel_rays(camera: Camera) -> tuple[Tensor, Tensor]:
    """World-space rays through every pixel centre (used by the ray-cast ground truth).

    Returns:
        ``origins [H, W, 3]`` (all the camera centre) and unit ``directions [H, W, 3]``:
        the inverse of ``project_points`` at ``(u, v) = (j + 0.5, i + 0.5)``.
    """
    dtype, device = camera.R.dtype, camera.R.device
    v, u = torch.meshgrid(
        torch.arange(camera.height, dtype=dtype, device=device) + 0.5,
        torch.arange(camera.width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    d_cam = torch.stack(
        [(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, torch.ones_like(u)], -1
    )  # [H, W, 3], a point at depth z = 1
    directions = d_cam @ camera.R  # Rᵀ d for every pixel: camera → world rotation
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return camera.center.expand_as(directions), directions
