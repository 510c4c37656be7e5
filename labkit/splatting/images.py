"""Target images for 2D fits: the photographs bundled with scikit-image (no download).

Explained in notebooks/50_gaussian_splatting_tiny.py.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_image"]


def load_image(name: str = "astronaut", size: int = 128) -> Tensor:
    """``skimage.data.<name>()`` as a ``[size, size, 3]`` float32 image in ``[0, 1]``.

    The largest centred square is cut out first (so nothing is stretched), then resized with
    antialiasing (a Gaussian prefilter, so small sizes do not alias). Grey images are repeated
    to three channels, an alpha channel is dropped.
    """
    import skimage.data
    from skimage.transform import resize

    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise ValueError(f"skimage.data has no image {name!r} (e.g. astronaut, coffee, camera)")
    image = np.asarray(loader())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = image[..., :3]
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]  # [side, side, 3]
    resized = resize(square, (size, size), anti_aliasing=True)  # float64 in [0, 1]
    return torch.from_numpy(resized.astype(np.float32)).clamp(0, 1)
