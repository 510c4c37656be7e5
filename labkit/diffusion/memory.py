"""How much GPU memory one P20 training step needs, estimated without a GPU.

The GPU configs (``p20_ddpm_gpu.yaml``, ``p20_cifar_gpu.yaml``) state their estimate for a
GTX 1060 6 GB; ``tests/test_diffusion_task.py`` checks they fit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from labkit.diffusion.task import build_model
from labkit.diffusion.unet import count_parameters

CUDA_OVERHEAD_GIB = 0.5  # CUDA context, cuBLAS/cuDNN workspaces: ~0.3-0.5 GiB on a GTX 1060
BACKWARD_SLACK = 1.25  # activation gradients alive during backward, allocator fragmentation


def training_memory_estimate(cfg: dict) -> dict[str, float]:
    """GiB that one fp32 training step of ``cfg``'s U-Net at ``data.batch_size`` needs on a GPU.

    Counted on the ``meta`` device (shapes only, nothing computed, so it runs anywhere in
    milliseconds): every tensor autograd saves for the backward pass during one forward pass
    (``torch.autograd.graph.saved_tensors_hooks``; a tensor saved by two ops counts twice, so
    this errs high), plus weights, gradients and AdamW's two moments (16 bytes a parameter),
    times :data:`BACKWARD_SLACK`, plus :data:`CUDA_OVERHEAD_GIB`. Sampling at evaluation needs
    far less (no saved activations).

    Returns:
        ``{"parameters", "activations_gib", "states_gib", "total_gib"}``.
    """
    model = build_model(cfg).to("meta")
    b, size, c = cfg["data"]["batch_size"], cfg["data"]["image_size"], model.in_channels
    x = torch.empty(b, c, size, size, device="meta")  # [B, C, H, W]
    t = torch.zeros(b, dtype=torch.long, device="meta")  # [B]
    labels = t.clone() if model.num_classes else None
    saved: list[int] = []

    def pack(tensor: Tensor) -> Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x, t, labels)
    gib = 2.0**30
    activations = (sum(saved) + out.numel() * out.element_size()) / gib
    n = count_parameters(model)
    states = 16 * n / gib
    total = BACKWARD_SLACK * (activations + states) + CUDA_OVERHEAD_GIB
    return {
        "parameters": n,
        "activations_gib": activations,
        "states_gib": states,
        "total_gib": total,
    }
