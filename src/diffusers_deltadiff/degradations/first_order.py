"""
A mild, first-order degradation: what a sharp camera, a phone or a light web JPEG does, where Real-ESRGAN's
second-order model is a worst case. Built from the same albumentations pieces as [`~second_order`]:

1. blur, 80 % of the time: isotropic or anisotropic Gaussian, sigma in [0.2, 2] HR pixels (a lens, a little
   defocus);
2. the downscale to the LR size, with area, bilinear or bicubic interpolation;
3. noise, half of the time: Gaussian, sigma 1-8 levels, grey 40 % of the time;
4. JPEG, half of the time, at quality 50-95.
"""

import albumentations as A
import numpy as np
import torch

from .second_order import ResizeTo


def first_order_pipeline(height: int, width: int, scale: int) -> A.Compose:
    """The mild degradation of an HR image of `height` x `width` to its LR size, as one albumentations Compose."""
    sigma = (0.2, 2.0)
    blur = A.OneOf(
        [
            A.GaussianBlur(blur_limit=(7, 15), sigma_limit=sigma, p=0.6),
            A.AdvancedBlur((7, 15), sigma, sigma, beta_limit=(0.999, 1.001), noise_limit=(1, 1), p=0.4),
        ],
        p=0.8,
    )
    noise = A.OneOf(
        [
            A.GaussNoise(std_range=(1 / 255, 8 / 255), per_channel=True, p=0.6),
            A.GaussNoise(std_range=(1 / 255, 8 / 255), per_channel=False, p=0.4),
        ],
        p=0.5,
    )
    resize = ResizeTo((height // scale, width // scale))
    return A.Compose([blur, resize, noise, A.ImageCompression(quality_range=(50, 95), p=0.5)], strict=False)


class FirstOrder:
    """`(hr, seed) -> lr`: [`first_order_pipeline`] at `scale`, 8-bit output."""

    def __init__(self, scale: int = 4):
        self.scale = scale
        self._pipelines = {}

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        height, width = hr.shape[-2:]
        if (height, width) not in self._pipelines:
            self._pipelines[(height, width)] = first_order_pipeline(height, width, self.scale)
        pipeline = self._pipelines[(height, width)]
        pipeline.set_random_seed(int(seed) % (2**32))
        image = np.ascontiguousarray(hr.permute(1, 2, 0).float().numpy())
        lr = np.clip(pipeline(image=image)["image"], 0, 1)
        return torch.from_numpy((lr * 255).round().astype(np.float32) / 255).permute(2, 0, 1).contiguous()
