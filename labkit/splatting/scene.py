"""A synthetic 3D scene with exact ground truth: a few coloured spheres and boxes on a floor.

Images are ray cast (one ray per sub-pixel, analytic ray–sphere and ray–box intersection) and
Lambert shaded with a fixed directional light plus ambient, no shadows, so a surface point has
the same colour from every view (degree-0 SH can represent it exactly). Each pixel averages
``supersample²`` rays, an antialiased image like a real camera's (splats are smooth too).

"SfM-like" points: 3DGS starts from the sparse point cloud that structure-from-motion (COLMAP)
triangulates from the photos. Here points are sampled uniformly on the surfaces (by area), with
their shaded colour, and both position and colour get Gaussian noise, as triangulated points do.
Downward-facing surfaces (never seen from cameras above the floor) get no points, as SfM would
not see them either.

Explained in notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from labkit.splatting.cameras import Camera, orbit_cameras, pixel_rays

__all__ = [
    "Sphere",
    "Box",
    "Scene",
    "default_scene",
    "ray_sphere",
    "ray_box",
    "render_scene",
    "sample_surface_points",
    "SceneData",
    "make_scene_data",
]

_EPS = 1e-6


@dataclass
class Sphere:
    center: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float]


@dataclass
class Box:
    """Axis-aligned box ``[lo, hi]`` (component-wise)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    color: tuple[float, float, float]


@dataclass
class Scene:
    spheres: list[Sphere]
    boxes: list[Box]
    light: tuple[float, float, float] = (0.5, 0.3, 1.0)  # direction towards the light
    ambient: float = 0.3
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    primitives: list = field(init=False)

    def __post_init__(self) -> None:
        self.primitives = [*self.spheres, *self.boxes]


def default_scene() -> Scene:
    """A red sphere, a green cube, a small yellow sphere on a blue floor tile, white background."""
    return Scene(
        spheres=[
            Sphere((-0.45, -0.35, 0.45), 0.45, (0.9, 0.15, 0.1)),
            Sphere((0.35, -0.75, 0.25), 0.25, (0.95, 0.8, 0.1)),
        ],
        boxes=[
            Box((0.1, 0.05, 0.0), (0.7, 0.65, 0.6), (0.15, 0.75, 0.2)),
            Box((-1.2, -1.2, -0.1), (1.2, 1.2, 0.0), (0.25, 0.35, 0.8)),  # the floor
        ],
    )


# ---------------------------------------------------------------- ray casting


def ray_sphere(origins: Tensor, directions: Tensor, sphere: Sphere) -> tuple[Tensor, Tensor]:
    """Nearest hit of unit-direction rays with a sphere. ``[R, 3]`` x2 → ``t [R]`` (inf = miss), normals ``[R, 3]``.

    Solves ``|o + t d - c|² = r²``: ``t² + 2 b t + (|o - c|² - r²) = 0`` with ``b = d · (o - c)``,
    nearest root ``t = -b - sqrt(b² - |o - c|² + r²)``.
    """
    center = torch.tensor(sphere.center, dtype=origins.dtype, device=origins.device)
    oc = origins - center
    b = (directions * oc).sum(-1)
    disc = b * b - (oc * oc).sum(-1) + sphere.radius**2
    t = -b - torch.sqrt(disc.clamp(min=0))
    t = torch.where((disc >= 0) & (t > _EPS), t, torch.full_like(t, math.inf))
    normals = (origins + t.clamp(max=1e6)[:, None] * directions - center) / sphere.radius
    return t, normals


def ray_box(origins: Tensor, directions: Tensor, box: Box) -> tuple[Tensor, Tensor]:
    """Nearest hit with an axis-aligned box, by the slab method. Same shapes as ``ray_sphere``.

    Along each axis the ray is between the two planes for ``t`` in ``[t_near, t_far]``; it is inside
    the box where all three intervals overlap: ``max(t_near) <= min(t_far)``. The entry face is the
    axis that attains ``max(t_near)``; its normal points against the ray.
    """
    lo = torch.tensor(box.lo, dtype=origins.dtype, device=origins.device)
    hi = torch.tensor(box.hi, dtype=origins.dtype, device=origins.device)
    d = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t1, t2 = (lo - origins) / d, (hi - origins) / d  # [R, 3]
    t_near, axis = torch.minimum(t1, t2).max(-1)
    t_far = torch.maximum(t1, t2).min(-1).values
    hit = (t_near <= t_far) & (t_near > _EPS)  # (cameras are outside every box)
    t = torch.where(hit, t_near, torch.full_like(t_near, math.inf))
    normals = torch.zeros_like(origins)
    normals.scatter_(1, axis[:, None], -torch.sign(d.gather(1, axis[:, None])))
    return t, normals


def _intersect(scene: Scene, origins: Tensor, directions: Tensor):
    """Nearest hit over all primitives: ``t [R]``, ``normals [R, 3]``, ``albedo [R, 3]``."""
    like = dict(dtype=origins.dtype, device=origins.device)
    best_t = torch.full(origins.shape[:1], math.inf, **like)
    normals = torch.zeros_like(origins)
    albedo = torch.tensor(scene.background, **like).expand_as(origins).clone()
    for prim in scene.primitives:
        hit_fn = ray_sphere if isinstance(prim, Sphere) else ray_box
        t, n = hit_fn(origins, directions, prim)
        closer = t < best_t
        best_t = torch.where(closer, t, best_t)
        normals[closer] = n[closer]
        albedo[closer] = torch.tensor(prim.color, **like)
    return best_t, normals, albedo


def _shade(scene: Scene, normals: Tensor, albedo: Tensor) -> Tensor:
    """Lambert: ``albedo · (ambient + (1 - ambient) · max(0, n · l))``. ``[R, 3]``."""
    light = torch.tensor(scene.light, dtype=normals.dtype, device=normals.device)
    lambert = (normals @ (light / light.norm())).clamp(min=0)
    return albedo * (scene.ambient + (1 - scene.ambient) * lambert)[:, None]


def render_scene(scene: Scene, camera: Camera, supersample: int = 3) -> Tensor:
    """Ground-truth image ``[H, W, 3]`` in ``[0, 1]``: the mean of ``supersample²`` rays per pixel."""
    s = supersample
    fine = Camera(
        camera.fx * s,
        camera.fy * s,
        camera.cx * s,
        camera.cy * s,
        camera.width * s,
        camera.height * s,
        camera.R,
        camera.t,
    )
    origins, directions = pixel_rays(fine)
    # float64: the ray-sphere discriminant b² - |o - c|² + r² cancels (b² ≈ 16 for a camera 4
    # units away, the result ≈ 0 at a silhouette), and float32 would move the silhouettes by
    # its rounding. The images are made once, so the cost does not matter.
    origins, directions = origins.reshape(-1, 3).double(), directions.reshape(-1, 3).double()
    t, normals, albedo = _intersect(scene, origins, directions)
    color = torch.where(torch.isfinite(t)[:, None], _shade(scene, normals, albedo), albedo)
    color = color.reshape(camera.height, s, camera.width, s, 3).mean(dim=(1, 3))
    return color.float()


# ---------------------------------------------------------------- "SfM" points


def _sample_on(prim, num: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``num`` uniform points on a primitive's surface and their outward normals, on the
    generator's device; float64 for the margin test of ``sample_surface_points``."""
    like = dict(dtype=torch.float64, device=generator.device)
    if isinstance(prim, Sphere):
        n = torch.randn(num, 3, generator=generator, **like)
        n = n / n.norm(dim=-1, keepdim=True)
        return torch.tensor(prim.center, **like) + prim.radius * n, n
    lo, hi = torch.tensor(prim.lo, **like), torch.tensor(prim.hi, **like)
    size = hi - lo
    areas = torch.stack([size[1] * size[2], size[0] * size[2], size[0] * size[1]]).repeat(
        2
    )  # 6 faces
    face = torch.multinomial(
        areas, num, replacement=True, generator=generator
    )  # 0-2: lo side, 3-5: hi
    axis, high = face % 3, face >= 3
    p = lo + torch.rand(num, 3, generator=generator, **like) * size
    rows = torch.arange(num, device=generator.device)
    p[rows, axis] = torch.where(high, hi[axis], lo[axis])
    n = torch.zeros(num, 3, **like)
    n[rows, axis] = torch.where(high, 1.0, -1.0).double()
    return p, n


def _surface_area(prim) -> float:
    if isinstance(prim, Sphere):
        return 4 * math.pi * prim.radius**2
    sx, sy, sz = (hi - lo for lo, hi in zip(prim.lo, prim.hi))
    return 2 * (sx * sy + sx * sz + sy * sz)


def sample_surface_points(
    scene: Scene,
    num: int,
    generator: torch.Generator | None = None,
    position_noise: float = 0.01,
    color_noise: float = 0.03,
) -> tuple[Tensor, Tensor]:
    """About ``num`` noisy coloured points on the visible surfaces. ``points [M, 3]``, ``colors [M, 3]``.

    Points are spread over primitives by surface area. Dropped (so M < num): points on downward
    faces, and points inside or on another primitive (the floor under the cube): no camera sees them.
    Noise: ``position_noise`` (world units) and ``color_noise`` standard deviations. The points
    are on the generator's device (default: a CPU one seeded with 0).

    Sampled in float64, returned as float32: the "on another primitive" test works with a 1e-6
    margin, about ten float32 steps at these coordinates, so float64 keeps it clear of rounding.
    """
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(0)
    like = dict(dtype=torch.float64, device=generator.device)
    areas = torch.tensor([_surface_area(p) for p in scene.primitives], **like)
    owner = torch.multinomial(areas, num, replacement=True, generator=generator)
    counts = owner.bincount(minlength=len(areas))
    points, colors = [], []
    for k, (prim, count) in enumerate(zip(scene.primitives, counts.tolist())):
        p, n = _sample_on(prim, count, generator)
        others = [q for j, q in enumerate(scene.primitives) if j != k]
        keep = (n[:, 2] > -0.5) & ~_inside_any(others, p)
        albedo = torch.tensor(prim.color, **like).expand(int(keep.sum()), 3)
        points.append(p[keep])
        colors.append(_shade(scene, n[keep], albedo))
    points, colors = torch.cat(points), torch.cat(colors)
    points = points + position_noise * torch.randn(points.shape, generator=generator, **like)
    colors = colors + color_noise * torch.randn(colors.shape, generator=generator, **like)
    return points.float(), colors.clamp(0, 1).float()


def _inside_any(primitives: list, points: Tensor, margin: float = 1e-6) -> Tensor:
    """``[M]`` True where a point is inside or on (within ``margin``) any of the primitives."""
    inside = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    like = dict(dtype=points.dtype, device=points.device)
    for prim in primitives:
        if isinstance(prim, Sphere):
            c = torch.tensor(prim.center, **like)
            inside |= (points - c).norm(dim=-1) <= prim.radius + margin
        else:
            lo, hi = torch.tensor(prim.lo, **like), torch.tensor(prim.hi, **like)
            inside |= ((points >= lo - margin) & (points <= hi + margin)).all(-1)
    return inside


# ---------------------------------------------------------------- the data set of a 3D fit


@dataclass
class SceneData:
    """Everything a 3D fit sees: posed training images, held-out views, and the sparse points.

    ``train_images`` / ``test_images``: ``[V, H, W, 3]``; ``points [M, 3]``, ``colors [M, 3]``;
    ``background [3]``.
    """

    scene: Scene
    train_cameras: list[Camera]
    train_images: Tensor
    test_cameras: list[Camera]
    test_images: Tensor
    points: Tensor
    colors: Tensor
    background: Tensor

    def to(self, device: torch.device | str) -> SceneData:
        """The same data with every tensor (images, points, cameras' ``R, t``) on ``device``."""
        return replace(
            self,
            train_cameras=[camera.to(device) for camera in self.train_cameras],
            train_images=self.train_images.to(device),
            test_cameras=[camera.to(device) for camera in self.test_cameras],
            test_images=self.test_images.to(device),
            points=self.points.to(device),
            colors=self.colors.to(device),
            background=self.background.to(device),
        )


def make_scene_data(
    scene: Scene | None = None,
    size: int = 64,
    num_train: int = 24,
    num_test: int = 8,
    radius: float = 4.0,
    fov_deg: float = 45.0,
    num_points: int = 2000,
    seed: int = 0,
    supersample: int = 3,
) -> SceneData:
    """Cameras, ground-truth images and SfM-like points of ``scene`` (default: ``default_scene()``).

    Training cameras sit on two orbits (elevations 20° and 50°, ``num_train / 2`` each, the upper
    one shifted half a step in azimuth); held-out cameras on a third orbit at 35°, between the two
    and at azimuths no training camera has: the test asks for new views, not memorised ones.
    Made on the CPU (the data set of a fit, like a photo loaded from disk); ``.to(device)``
    moves it.
    """
    scene = scene if scene is not None else default_scene()
    half = num_train // 2
    step = 360.0 / half
    train = orbit_cameras(half, radius, 20.0, size, size, fov_deg) + orbit_cameras(
        num_train - half, radius, 50.0, size, size, fov_deg, azimuth_offset_deg=step / 2
    )
    test = orbit_cameras(num_test, radius, 35.0, size, size, fov_deg, azimuth_offset_deg=step / 4)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    points, colors = sample_surface_points(scene, num_points, generator)
    return SceneData(
        scene=scene,
        train_cameras=train,
        train_images=torch.stack([render_scene(scene, c, supersample) for c in train]),
        test_cameras=test,
        test_images=torch.stack([render_scene(scene, c, supersample) for c in test]),
        points=points,
        colors=colors,
        background=torch.tensor(scene.background, device="cpu"),
    )
