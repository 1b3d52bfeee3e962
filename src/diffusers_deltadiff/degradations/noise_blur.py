"""Two single degradations for evaluation: sensor-like noise on the LR, and a lens-like blur before the downscale."""

import PIL.ImageFilter
import torch

from ..image_utils import to_pil, to_unit_tensor
from .bicubic import bicubic_downsample
from .contract import fold_seed


class BicubicNoise:
    """`(hr, seed) -> lr`: the protocol's bicubic LR plus Gaussian noise of `sigma` 8-bit levels, rounded to 8 bits."""

    def __init__(self, scale: int = 4, sigma: float = 15.0):
        self.scale, self.sigma = scale, sigma

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        lr = bicubic_downsample(hr, self.scale)
        generator = torch.Generator().manual_seed(fold_seed(seed))  # the CPU generator keeps 32 bits
        noise = torch.randn(lr.shape, generator=generator) * (self.sigma / 255)
        return ((lr + noise).clamp(0, 1) * 255).round() / 255


class BlurDownsample:
    """`(hr, seed) -> lr`: a Gaussian blur of standard deviation `sigma` HR pixels, then the bicubic LR."""

    def __init__(self, scale: int = 4, sigma: float = 1.6):
        self.scale, self.sigma = scale, sigma

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        blurred = to_unit_tensor(to_pil(hr).filter(PIL.ImageFilter.GaussianBlur(self.sigma)))
        return bicubic_downsample(blurred, self.scale)
