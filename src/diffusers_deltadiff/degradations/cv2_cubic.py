"""
OpenCV's downscale: `cv2.resize(..., interpolation=cv2.INTER_CUBIC)`, which samples without antialiasing. Many tools
make thumbnails this way, and the published OpenCV `dnn_superres` models were trained on such LR images
(`benchmarks/opencv_peers.py`). It is an evaluation set; for training, `aliased` draws this kind of downscale among
others.
"""

import numpy as np
import torch

from ..image_utils import to_pil, to_unit_tensor


def cv2_cubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """`(3, H, W)` in `[0, 1]`, as 8 bits, resized by `cv2.INTER_CUBIC` to `(H // scale, W // scale)`."""
    import cv2  # OpenCV comes with albumentations (the `training` extra)

    array = np.asarray(to_pil(hr))
    size = (array.shape[1] // scale, array.shape[0] // scale)
    return to_unit_tensor(cv2.resize(array, size, interpolation=cv2.INTER_CUBIC))


class CV2Cubic:
    """`(hr, seed) -> lr`: [`cv2_cubic_downsample`] by `scale`, the seed unused."""

    def __init__(self, scale: int = 4):
        self.scale = scale

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        return cv2_cubic_downsample(hr, self.scale)
