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

from .second_order import ResizeTo
from .seeded_pipeline import SeededPipeline


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


class FirstOrder(SeededPipeline):
    """`(hr, seed) -> lr`: [`first_order_pipeline`] at `scale`, 8-bit output."""

    build = staticmethod(first_order_pipeline)
