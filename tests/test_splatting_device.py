"""P50 runs on any device: nothing in ``labkit.splatting`` makes a tensor on a fixed device.

Checked on the CPU in two ways, each shown to fail on a planted bug:

1. ``made_on("cpu")``: the default device is ``meta`` (``with torch.device("meta")``) while the
   inputs are real CPU tensors, so a factory call without ``device=`` (``torch.zeros(3)``,
   ``torch.arange(n)``) makes a shape-only meta tensor. Mixing it with CPU tensors often raises
   by itself, but not always (a CPU tensor indexed by a meta index quietly works), so a
   ``TorchDispatchMode`` records the device of every tensor every op returns, backward
   included, and the guard fails on any that is not on the inputs' device.
2. ``made_on("meta")`` with meta inputs, for the functions that depend on shapes only
   (projection, splats, the dense rasteriser, SSIM): a tensor made on a fixed device
   (``device="cpu"``, ``.cpu()``) shows up as an output that is not meta. The tiled
   rasteriser and the fits depend on values (tile lists, ``nonzero``), so this check cannot
   run them; the first one does.

Then the CLI: ``device=auto`` runs, ``device=cuda`` without a GPU is the lab's one-paragraph
error (exit 2). With a GPU, short fits run on it and land near the CPU's numbers.
"""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from labkit.splatting import densify as densify_module
from labkit.splatting import task
from labkit.splatting.cameras import (
    look_at,
    orbit_cameras,
    pixel_rays,
    project_covariances,
    project_points,
    world_to_camera,
)
from labkit.splatting.densify import DensifyConfig, GradientStats, densify_and_prune
from labkit.splatting.fit import image_loss
from labkit.splatting.gaussians import (
    Gaussians2D,
    gaussians_2d_from_image,
    random_gaussians_2d,
    random_gaussians_3d,
    sh_to_rgb,
)
from labkit.splatting.loop import run_fit, side_by_side
from labkit.splatting.metrics import psnr, ssim
from labkit.splatting.rasterise import (
    make_splats,
    render,
    render_dense,
    render_gaussians_2d,
    render_gaussians_3d,
)
from labkit.train import main
from labkit.utils.config import apply_overrides, load_config
from labkit.utils.device import DeviceError

ROOT = Path(__file__).resolve().parents[1]
SPLATTING = ROOT / "labkit" / "splatting"
TINY_2D = ["data.size=24", "model.num_gaussians=60", "trainer.max_steps=6", "densify.enabled=true",
           "densify.start=3", "densify.every=3", "densify.stop=6", "densify.grad_threshold=0",
           "densify.max_gaussians=200", "trainer.eval_every=3", "trainer.log_every=3"]  # fmt: skip
TINY_3D = ["data.size=16", "data.num_points=60", "data.num_train=3", "data.num_test=1",
           "data.supersample=1", "trainer.max_steps=6", "densify.start=3", "densify.every=3",
           "densify.stop=6", "densify.grad_threshold=0", "densify.max_gaussians=200",
           "trainer.eval_every=3", "trainer.log_every=3", "model.sh_degree=1"]  # fmt: skip
NO_CUDA = not torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------
# The guard


class StrayTensor(AssertionError):
    """A tensor was made on another device than the inputs'."""


class Record:
    """Each tensor made that is not on ``expected``, with the line of labkit (or of this file)
    that made it."""

    def __init__(self, expected: torch.device) -> None:
        self.expected, self.stray, self.tensors = expected, [], 0

    def check(self, func, out) -> None:
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.tensors += 1
                if t.device != self.expected and len(self.stray) < 5:
                    name = getattr(func, "__name__", str(func))
                    self.stray.append(f"{name} -> {t.device} at {_caller()}")


class OpDevices(TorchDispatchMode):
    """Every aten op's outputs, backward included."""

    def __init__(self, record: Record) -> None:
        super().__init__()
        self.record = record

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.record.check(func, out)
        return out


class FunctionDevices(TorchFunctionMode):
    """Every torch function's outputs: ``torch.tensor(data)`` makes its tensor where the
    dispatch mode cannot see it (and ``x[mask] = meta_tensor`` then quietly does nothing)."""

    def __init__(self, record: Record) -> None:
        super().__init__()
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.record.check(func, out)
        return out


def _caller() -> str:
    guard = ("check", "__torch_dispatch__", "__torch_function__", "_caller")
    for frame in reversed(traceback.extract_stack()):
        if frame.name in guard:
            continue
        if "labkit" in frame.filename or frame.filename == __file__:
            return f"{Path(frame.filename).name}:{frame.lineno} `{frame.line}`"
    return "?"


@contextmanager
def made_on(device: str) -> Iterator[Record]:
    """Run the block with ``meta`` as the default device; every tensor made must be on ``device``.

    Raises:
        StrayTensor: naming the first ops that made a tensor elsewhere (also when mixing devices
            made the block raise before the end).
    """
    record = Record(torch.device(device))
    try:
        # entered after the default device, FunctionDevices sees what it made
        with torch.device("meta"), FunctionDevices(record), OpDevices(record):
            yield record
    except Exception as err:
        if record.stray:
            raise StrayTensor(f"{record.stray} (then {type(err).__name__}: {err})") from err
        raise
    if record.stray:
        raise StrayTensor(str(record.stray))
    assert record.tensors > 0, "the guard saw no op: is the dispatch mode active?"


def _gaussians_2d(n: int = 40, size: int = 20) -> Gaussians2D:
    return random_gaussians_2d(n, size, size, torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# The guard fails on planted bugs


def _planted_factory(x: torch.Tensor) -> torch.Tensor:
    return x + torch.zeros(x.shape)  # BUG: no device=


def _planted_index(x: torch.Tensor) -> torch.Tensor:
    return x[torch.arange(3)]  # BUG: no device=; works silently (a meta index into CPU data)


def _planted_unused(x: torch.Tensor) -> torch.Tensor:
    torch.ones(3).sum()  # BUG: no device=; mixed with nothing, so nothing raises
    return x * 2


def _planted_literal(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[x > 0] = torch.tensor(5.0)  # BUG: no device=; the assignment quietly does nothing
    return y


def _planted_hard_coded(x: torch.Tensor) -> torch.Tensor:
    return x + torch.zeros(x.shape, device="cpu")  # BUG: a fixed device


@pytest.mark.parametrize(
    "planted", [_planted_factory, _planted_index, _planted_unused, _planted_literal]
)
def test_the_guard_catches_a_tensor_made_without_device(planted):
    x = torch.ones(3)
    with pytest.raises(StrayTensor, match="meta at test_splatting_device.py"):
        with made_on("cpu"):
            planted(x)


def test_the_meta_guard_catches_a_hard_coded_device():
    on_meta, on_cpu = torch.ones(3, device="meta"), torch.ones(3)
    with pytest.raises(StrayTensor, match="cpu at test_splatting_device.py"):
        with made_on("meta"):
            _planted_hard_coded(on_meta)
    with made_on("cpu"):  # the first guard cannot see this one: the inputs are on the CPU too
        _planted_hard_coded(on_cpu)


def test_the_guard_catches_the_old_gradient_statistics(monkeypatch):
    """The statistics densification reads were ``torch.zeros(num)``: planted back, a densifying
    fit under the guard fails and names the line."""

    def old_init(self, num, device=None):
        self.grad_sum, self.count = torch.zeros(num), torch.zeros(num)  # BUG: no device=

    monkeypatch.setattr(densify_module.GradientStats, "__init__", old_init)
    fit = task.build(task.check(_config("p50_splat2d", TINY_2D)), torch.device("cpu"))
    with pytest.raises(StrayTensor, match="zeros -> meta at test_splatting_device.py"):
        with made_on("cpu"):
            fit.stats = GradientStats(len(fit.gaussians))
            for _ in range(4):
                fit.train_step()


# ---------------------------------------------------------------------------------------------
# Nothing in labkit.splatting makes a tensor on a fixed device


def test_rasterisers_make_every_tensor_on_the_inputs_device():
    g = _gaussians_2d().requires_grad_()
    background = torch.tensor([1.0, 1.0, 1.0])
    with made_on("cpu"):
        splats = make_splats(g.means, g.covariances(), g.colors, g.opacities)
        for mode in ("sum", "alpha"):
            for tile in (4, 8):
                image, alpha = render(splats, 20, 17, mode, background, tile=tile)
                (image.sum() + alpha.sum()).backward(retain_graph=True)
            render_dense(splats, 20, 17, mode, background)[0].sum().backward(retain_graph=True)
        render_gaussians_2d(g, 20, 20, "sum").sum().backward()


def test_projection_and_the_3d_render_make_every_tensor_on_the_inputs_device():
    g = random_gaussians_3d(30, 0.5, 1, torch.Generator().manual_seed(0)).requires_grad_()
    eye, target, background = torch.tensor([3.0, 0.0, 1.0]), torch.zeros(3), torch.ones(3)
    photo = torch.rand(16, 16, 3)
    with made_on("cpu"):
        camera = orbit_cameras(1, 3.0, 30.0, 16, 16, device="cpu")[0]
        R, t = look_at(eye, target)
        pixel_rays(camera)
        out = render_gaussians_3d(g, camera, background)
        (out.image.sum() + out.means2d.sum()).backward()
        loss = image_loss(out.image, photo, 0.2)
        psnr(out.image.detach(), out.image.detach() * 0.9)
    assert R.shape == (3, 3) and t.shape == (3,) and torch.isfinite(loss)


def test_initialisers_and_densification_make_every_tensor_on_the_inputs_device():
    config = DensifyConfig(grad_threshold=0.0, scale_threshold=1.5, max_gaussians=200)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(20, 20, 3)
    for conserve_sum in (False, True):
        config.conserve_sum = conserve_sum
        with made_on("cpu"):
            g = gaussians_2d_from_image(image, 40, generator).requires_grad_()
            g.opacity_logits.data[:3] = -10.0  # three to prune
            optimizer = torch.optim.Adam(
                [{"params": [t], "name": k} for k, t in g.tensors().items()]
            )
            render_gaussians_2d(g, 20, 20).sum().backward()
            optimizer.step()
            stats = GradientStats(len(g), g.means.device)
            stats.add(g.means.grad)
            new = densify_and_prune(g, optimizer, stats, config, generator)
            random_gaussians_2d(10, 20, 20, generator)  # init: random
            random_gaussians_3d(10, 1.0, 1, generator)
        assert len(new) > len(g) - 3  # something was cloned or split


@pytest.mark.parametrize("name, overrides", [("p50_splat2d", TINY_2D), ("p50_splat3d", TINY_3D)])
def test_a_fit_from_build_to_resume_makes_every_tensor_on_the_device(name, overrides):
    """Build (image or ray-cast scene), steps across a densification round, evaluation, the
    loop, and a resume from the fit's own state: all under the guard."""
    cfg = task.check(_config(name, overrides))
    with made_on("cpu"):
        fit = task.build(cfg, torch.device("cpu"))
        start = len(fit.gaussians)
        run_fit(fit, eval_every=3, stop_at=4)
        assert len(fit.gaussians) > start  # densified at step 3
        state = fit.state_dict()
        fit.load_state_dict(state)
        run_fit(fit, eval_every=3)
        side_by_side(fit.preview_target(), fit.preview())
    assert fit.step == 6


def test_shape_only_functions_keep_meta_inputs_on_meta():
    """With meta inputs a tensor made on a fixed device (``device="cpu"``) would stand out."""
    meta = torch.device("meta")
    g = Gaussians2D(*(t.to(meta) for t in _gaussians_2d().tensors().values()))
    camera = orbit_cameras(1, 3.0, 30.0, 16, 16)[0].to(meta)  # look_at checks values: on the CPU
    points = torch.empty(30, 3, device=meta)
    with made_on("meta"):
        cov = g.covariances()
        splats = make_splats(g.means, cov, g.colors, g.opacities)
        for mode in ("sum", "alpha"):
            render_dense(splats, 12, 10, mode, torch.ones(3, device=meta))
        cam_points = world_to_camera(points, camera)
        project_points(cam_points, camera)
        project_covariances(torch.empty(30, 3, 3, device=meta), cam_points, camera)
        pixel_rays(camera)
        sh_to_rgb(torch.empty(30, 4, 3, device=meta), torch.empty(30, 3, device=meta))
        a, b = torch.empty(16, 16, 3, device=meta), torch.empty(16, 16, 3, device=meta)
        ssim(a, b), psnr(a, b), image_loss(a, b, 0.2)


# ---------------------------------------------------------------------------------------------
# And what a reader can see in the code


def _tokens(source: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(textwrap.dedent(source)).readline))


@pytest.mark.parametrize("path", sorted(SPLATTING.glob("*.py")), ids=lambda p: p.name)
def test_no_host_copies_and_every_float64_says_why(path):
    """A weaker, static complement: no ``.cpu()`` / ``.numpy()`` / ``.cuda()`` outside the photo
    loader and the done checks, and a function that computes in float64 says why in a comment
    or its docstring."""
    source = path.read_text()
    tokens = _tokens(source)
    if path.name not in ("images.py", "done.py"):  # a photo from numpy; the CPU's done checks
        calls = {b.string for a, b in zip(tokens, tokens[1:]) if a.string == "." and b.type == 1}
        assert not calls & {
            "cpu",
            "numpy",
            "cuda",
        }, f"{path.name}: {calls & {'cpu', 'numpy', 'cuda'}}"
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef):
            continue
        body = _tokens(ast.get_source_segment(source, node) or "")
        code = {t.string for t in body if t.type == tokenize.NAME}
        notes = " ".join(t.string for t in body if t.type in (tokenize.COMMENT, tokenize.STRING))
        if code & {"float64", "double"}:
            assert "float64" in notes, f"{path.name}: {node.name} uses float64 and does not say why"


# ---------------------------------------------------------------------------------------------
# The config's device


def _config(name: str, overrides: list[str]) -> dict:
    return apply_overrides(load_config(name), overrides)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_the_configs_take_every_device_the_lab_knows(device):
    assert task.check(_config("p50_splat2d", [f"device={device}"]))["device"] == device


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["p50_splat2d", "p50_splat3d"])
def test_cuda_without_a_gpu_is_one_paragraph_and_exit_2(tmp_path, capsys, name):
    assert main([name, "device=cuda", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device=cuda but torch sees no CUDA GPU") and "--device cpu" in err
    assert "Traceback" not in err and not any(tmp_path.iterdir())
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        task.run(_config(name, ["device=cuda"]), None, progress=False)


@pytest.mark.skipif(not NO_CUDA, reason="auto would pick the GPU")
def test_auto_runs_on_the_cpu_without_a_gpu(tmp_path, capsys):
    args = ["p50_splat2d", "device=auto", "data.size=16", "model.num_gaussians=20",
            "trainer.max_steps=2", "--runs-dir", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    assert '"device": "cpu"' in next(tmp_path.rglob("env.json")).read_text()


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name, overrides", [("p50_splat2d", TINY_2D), ("p50_splat3d", TINY_3D)])
def test_on_a_gpu_a_fit_lives_there_and_lands_near_the_cpu(name, overrides):
    """Same seed, same start (the generator is on the CPU); the sums run in another order."""
    results = {}
    for device in ("cpu", "cuda"):
        result = task.run(_config(name, [*overrides, f"device={device}"]), None, progress=False)
        results[device] = result.summary
        if device == "cuda":
            assert all(t.is_cuda for t in result.setup.gaussians.tensors().values())
    assert results["cuda"]["eval/psnr"] == pytest.approx(results["cpu"]["eval/psnr"], abs=0.5)
