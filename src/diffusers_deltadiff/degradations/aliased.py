"""A thumbnail made without antialiasing: the HR image resized down by sampling (nearest, bilinear or bicubic at the
output pixels only, as `cv2.resize` and many web tools do), so fine detail folds into false patterns; sometimes
saved as JPEG after."""

import numpy as np
import torch
import torch.nn.functional as F

from .jpeg import jpeg_roundtrip


MODES = ("nearest-exact", "bilinear", "bicubic")


def aliased_downsample(hr: torch.Tensor, scale: int, mode: str) -> torch.Tensor:
    """`(3, H, W)` in `[0, 1]` resized to `(H // scale, W // scale)` by `mode` without antialiasing, 8 bits."""
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    lr = F.interpolate(hr[None].float(), size=size, mode=mode, antialias=False)[0]
    return lr.clamp(0, 1).mul(255).round().div(255)


class Aliased:
    """`(hr, seed) -> lr`: [`aliased_downsample`] with a mode drawn from `MODES`, then JPEG 50-95 half of the time."""

    def __init__(self, scale: int = 4):
        self.scale = scale

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        lr = aliased_downsample(hr, self.scale, MODES[int(rng.integers(len(MODES)))])
        return jpeg_roundtrip(lr, int(rng.integers(50, 96))) if rng.random() < 0.5 else lr
