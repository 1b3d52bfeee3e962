"""
A camera's own small image: a photo taken at a shorter focal length, as RealSR's LR images are. Near the clean LR,
but softer (a lens's blur before the sensor samples) and a little noisy, rarely compressed. Measured on LR images
alone (`benchmarks/degradation_stats.py`): RealSR's LR is 0.85 as detailed as the clean bicubic LR of its HR, with
noise of 1.2 levels and no JPEG grid; the `realworld` mix draws such images seldom (its `mild` branch resizes without
antialiasing two times in three and adds noise or JPEG half of the time).

1. blur: a Gaussian of sigma 0.6-2.4 HR pixels, anisotropic (a second sigma and a rotation) 40 % of the time;
2. the protocol's antialiased bicubic downscale ([`~bicubic.bicubic_downsample`]);
3. sensor noise half of the time: Gaussian, 0.5-3 levels, grey 40 % of the time;
4. JPEG at quality 75-95, 20 % of the time.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from .bicubic import bicubic_downsample
from .jpeg import jpeg_roundtrip


def gaussian_kernel(sigma_x: float, sigma_y: float, angle: float) -> torch.Tensor:
    """A normalised 2-D Gaussian with standard deviations `sigma_x`, `sigma_y` along axes rotated by `angle`."""
    radius = math.ceil(3 * max(sigma_x, sigma_y))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float64)
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * x + sin * y, -sin * x + cos * y
    kernel = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return kernel / kernel.sum()


def blur(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """`(3, H, W)` convolved with `kernel` per channel, edges reflected."""
    radius = kernel.shape[-1] // 2
    padded = F.pad(
        image[None].double(), (radius,) * 4, mode="reflect" if radius < min(image.shape[-2:]) else "replicate"
    )
    weight = kernel[None, None].expand(3, 1, -1, -1)
    return F.conv2d(padded, weight, groups=3)[0].to(image.dtype)


class Camera:
    """`(hr, seed) -> lr`: the steps of this module's docstring, every choice drawn from `seed`, 8-bit output."""

    def __init__(self, scale: int = 4):
        self.scale = scale

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        sigma_x = rng.uniform(0.6, 2.4)
        anisotropic = rng.random() < 0.4
        sigma_y = rng.uniform(0.6, 2.4) if anisotropic else sigma_x
        angle = rng.uniform(0, math.pi) if anisotropic else 0.0
        lr = bicubic_downsample(blur(hr.float(), gaussian_kernel(sigma_x, sigma_y, angle)).clamp(0, 1), self.scale)
        if rng.random() < 0.5:
            level = rng.uniform(0.5, 3.0) / 255
            shape = (1, *lr.shape[-2:]) if rng.random() < 0.4 else lr.shape
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            lr = (lr + torch.randn(shape, generator=generator) * level).clamp(0, 1).mul(255).round().div(255)
        if rng.random() < 0.2:
            lr = jpeg_roundtrip(lr, int(rng.integers(75, 96)))
        return lr
