"""Target images for 2D fits: the photographs bundled with scikit-image (no download).

Explained in notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["load_image"]


def load_image(name: str = "astronaut", size: int = 128) -> Tensor:
    """``skimage.data.<name>()`` as a ``[size, size, 3]`` float32 image in ``[0, 1]``.

    The largest centred square is cut out first (so nothing is stretched), then area-averaged
    down to ``size × size`` (each output pixel is the mean of the input pixels it covers: no
    aliasing when shrinking). Grey images are repeated to three channels, alpha is dropped.
    """
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise ValueError(f"skimage.data has no image {name!r} (e.g. astronaut, coffee, camera)")
    image = np.asarray(loader())
    if image.ndim == 2:  # grey: [H, W] -> [H, W, 3]
        image = np.repeat(image[..., None], 3, axis=-1)
    image = torch.from_numpy(image[..., :3].copy()).float() / 255  # [H, W, 3]
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    square = image[top : top + side, left : left + side].permute(2, 0, 1)[None]  # [1, 3, s, s]
    return F.interpolate(square, size=(size, size), mode="area")[0].permute(1, 2, 0).contiguous()
