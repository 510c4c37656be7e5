"""Pick the device, check that this torch build can drive the GPU, and decide on mixed precision.

Why the AMP policy looks the way it does (notebooks/00_pytorch_warmup.py, "Mixed precision"):
- compute capability >= 8.0 (Ampere and newer): bf16 natively, same range as fp32, no GradScaler.
- 7.x (Volta, Turing): fp16 tensor cores; fp16 needs a GradScaler against gradient underflow.
- 6.x (Pascal, e.g. the GTX 1060 = 6.1): no tensor cores and fp16 arithmetic at a fraction of
  fp32 speed, no native bf16. AMP brings no speed there, so it is off unless asked for.
- CPU: off by default; CPU autocast (bf16) is mostly slower on desktop processors.

Run ``python -m labkit.utils.device`` for a report of this machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labkit.utils.logging import get_logger

log = get_logger(__name__)

PASCAL_FIX = (
    "Reinstall torch with the CUDA 12.6 wheels, which still carry kernels for compute capability "
    "6.x: `TORCH_CUDA=cu126 make setup` (see ENVIRONMENT.md)."
)


class DeviceError(RuntimeError):
    """The requested device cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class AmpPolicy:
    """What autocast and the GradScaler do in a run."""

    enabled: bool
    dtype: torch.dtype | None  # torch.float16 or torch.bfloat16 when enabled
    use_scaler: bool  # fp16 only: scale the loss so small gradients don't underflow to 0
    reason: str


AMP_OFF = AmpPolicy(False, None, False, "AMP off")


def amp_policy(
    device_type: str, capability: tuple[int, int] | None = None, requested: str | bool = "auto"
) -> AmpPolicy:
    """Decide mixed precision from the device and the config's ``amp`` value.

    Args:
        device_type: ``"cuda"`` or ``"cpu"`` (``"mps"`` is treated like ``"cpu"``: AMP off).
        capability: CUDA compute capability ``(major, minor)``; required for ``"cuda"``.
        requested: ``"auto"`` (the policy in the module docstring), ``"off"``, ``"fp16"`` or ``"bf16"``.

    Raises:
        DeviceError: an unknown value, or bf16 asked for on a GPU without native bf16.
    """
    if requested is False:  # `amp: off` in a YAML file reads as False
        requested = "off"
    if requested not in ("auto", "off", "fp16", "bf16"):
        raise DeviceError(f"amp must be one of auto, off, fp16, bf16; got '{requested}'.")
    if requested == "off":
        return AmpPolicy(False, None, False, "AMP off (amp=off)")
    if device_type != "cuda":
        if requested == "bf16":
            return AmpPolicy(True, torch.bfloat16, False, "bf16 autocast on the CPU (amp=bf16)")
        if requested == "fp16":
            raise DeviceError("fp16 autocast needs a CUDA GPU; use amp=bf16 or amp=off on the CPU.")
        return AmpPolicy(
            False, None, False, "AMP off on the CPU (bf16 autocast is rarely faster there)"
        )
    if capability is None:
        raise DeviceError("amp_policy needs the GPU's compute capability for device_type='cuda'.")
    major = capability[0]
    if requested == "bf16":
        if major < 8:
            raise DeviceError(
                f"bf16 needs compute capability >= 8.0 for native support; this GPU is "
                f"{capability[0]}.{capability[1]}. Use amp=fp16 or amp=off."
            )
        return AmpPolicy(True, torch.bfloat16, False, "bf16 autocast (amp=bf16)")
    if requested == "fp16":
        note = " (no speed-up expected: no tensor cores)" if major < 7 else ""
        return AmpPolicy(True, torch.float16, True, f"fp16 autocast + GradScaler (amp=fp16){note}")
    if major >= 8:
        return AmpPolicy(
            True, torch.bfloat16, False, "bf16 autocast: native on compute capability >= 8.0"
        )
    if major == 7:
        return AmpPolicy(
            True, torch.float16, True, "fp16 autocast + GradScaler: tensor cores on 7.x"
        )
    return AmpPolicy(
        False,
        None,
        False,
        f"AMP off on compute capability {capability[0]}.{capability[1]} (Pascal or older): no tensor "
        f"cores and slow fp16, so mixed precision brings no speed; set amp=fp16 to try it anyway",
    )


def missing_kernels_message(capability: tuple[int, int], arch_list: list[str]) -> str | None:
    """Say what is wrong when this torch build has no kernels for the GPU, else ``None``.

    A build runs on a GPU if it carries SASS for the same major version and a minor <= the GPU's
    (``sm_XY``), or PTX (``compute_XY``) for an older architecture that the driver can JIT.

    Args:
        capability: ``torch.cuda.get_device_capability()``, e.g. ``(6, 1)``.
        arch_list: ``torch.cuda.get_arch_list()``, e.g. ``["sm_75", "sm_80", "compute_90"]``.
    """
    major, minor = capability
    ours = major * 10 + minor
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        if not number.isdigit():
            continue
        code = int(number)
        if kind == "sm" and code // 10 == major and code <= ours:
            return None
        if kind == "compute" and code <= ours:
            return None
    built = ", ".join(arch_list) or "none"
    fix = (
        PASCAL_FIX
        if major < 7
        else "Reinstall torch with wheels built for this GPU (see ENVIRONMENT.md)."
    )
    return (
        f"This torch {torch.__version__} build has no kernels for compute capability "
        f"{major}.{minor} (it was built for: {built}). {fix}"
    )


def get_device(preference: str = "auto") -> torch.device:
    """Return the device to train on and log what it is.

    Args:
        preference: ``"auto"`` (CUDA if usable, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        DeviceError: CUDA asked for but not available, or no kernels for this GPU in the torch build.
    """
    if preference == "cpu":
        log.info("device: cpu (%d threads)", torch.get_num_threads())
        return torch.device("cpu")
    if preference not in ("auto", "cuda") and not preference.startswith("cuda:"):
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:N; got '{preference}'.")
    if not torch.cuda.is_available():
        if preference == "auto":
            log.info("device: cpu (no CUDA GPU visible; %d threads)", torch.get_num_threads())
            return torch.device("cpu")
        raise DeviceError(
            f"device={preference} but torch sees no CUDA GPU (torch {torch.__version__}, built for "
            f"CUDA {torch.version.cuda}). Check `nvidia-smi`, or run with --device cpu."
        )
    device = torch.device("cuda" if preference == "auto" else preference)
    capability = torch.cuda.get_device_capability(device)
    problem = missing_kernels_message(capability, torch.cuda.get_arch_list())
    if problem:
        if preference == "auto":
            log.warning("%s Falling back to the CPU.", problem)
            return torch.device("cpu")
        raise DeviceError(problem)
    props = torch.cuda.get_device_properties(device)
    log.info(
        "device: %s (%s, compute capability %d.%d, %.1f GiB)",
        device,
        props.name,
        capability[0],
        capability[1],
        props.total_memory / 2**30,
    )
    return device


def device_amp_policy(device: torch.device, requested: str = "auto") -> AmpPolicy:
    """:func:`amp_policy` for a live device (reads its compute capability) and logs the decision."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    policy = amp_policy(device.type, capability, requested)
    log.info("amp: %s", policy.reason)
    return policy


def report() -> str:
    """A few lines describing torch, CUDA and the GPU (for ENVIRONMENT.md's verify step)."""
    lines = [f"torch {torch.__version__}, built for CUDA {torch.version.cuda}"]
    if not torch.cuda.is_available():
        lines.append("CUDA GPU: none visible; the lab runs on the CPU")
        return "\n".join(lines)
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        cap = (props.major, props.minor)
        problem = missing_kernels_message(cap, torch.cuda.get_arch_list())
        lines.append(
            f"cuda:{index} {props.name}, compute capability {cap[0]}.{cap[1]}, "
            f"{props.total_memory / 2**30:.1f} GiB, kernels: {'MISSING' if problem else 'ok'}"
        )
        lines.append(f"  amp auto: {amp_policy('cuda', cap).reason}")
        if problem:
            lines.append(f"  {problem}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
