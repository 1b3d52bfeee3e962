"""Low-resolution images made on the fly from high-resolution crops.

- `bicubic`: PIL's antialiased bicubic downscaling by the scale factor, 8 bits (the SR benchmarks' protocol).
- `realesrgan`: a Real-ESRGAN / ResShift-style second-order degradation (blur, random resize, noise, JPEG, twice,
  then the final resize to the LR size), built from albumentations transforms.

Every random choice comes from the `seed` passed in, so the same (seed, sample) always gives the same LR image.
"""

import numpy as np
import torch

from .image_utils import bicubic_resize


DEGRADATIONS = ("bicubic", "realesrgan")


def bicubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """
    The LR protocol, for training, validation and evaluation alike: PIL's antialiased bicubic downscaling by `scale`
    ([`~image_utils.bicubic_resize`], 8 bits) of `(B, 3, H, W)` or `(3, H, W)` images in `[0, 1]`.
    """
    batched = hr if hr.ndim == 4 else hr[None]
    size = (batched.shape[-2] // scale, batched.shape[-1] // scale)
    lr = torch.stack([bicubic_resize(image.float().cpu(), size) for image in batched]).to(hr.device)
    return lr if hr.ndim == 4 else lr[0]


def _second_order_pipeline(scale: int, size: int):
    import albumentations as A

    def stage(blur_sigma, resize_range, noise_std, jpeg_range, p_blur=1.0):
        return [
            A.AdvancedBlur(
                blur_limit=(7, 21),
                sigma_x_limit=blur_sigma,
                sigma_y_limit=blur_sigma,
                noise_limit=(0.75, 1.25),
                p=p_blur,
            ),
            A.RandomScale(scale_limit=(resize_range[0] - 1, resize_range[1] - 1), interpolation=2, p=1.0),
            A.GaussNoise(std_range=noise_std, p=0.5),
            A.ImageCompression(quality_range=jpeg_range, p=1.0),
        ]

    first = stage((0.2, 3.0), (0.15, 1.5), (0.004, 0.12), (30, 95))
    second = stage((0.2, 1.5), (0.3, 1.2), (0.004, 0.1), (30, 95), p_blur=0.8)
    final = [A.Resize(size // scale, size // scale, interpolation=2, p=1.0)]
    return A.Compose(first + second + final)


class Degradation:
    """Callable `(hr: (3, H, W) float in [0, 1], seed: int) -> lr: (3, H/scale, W/scale)`."""

    def __init__(self, kind: str = "bicubic", scale: int = 4):
        if kind not in DEGRADATIONS:
            raise ValueError(f"Unknown degradation {kind!r}: choose one of {DEGRADATIONS}.")
        self.kind = kind
        self.scale = scale
        self._pipelines = {}

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        if self.kind == "bicubic":
            return bicubic_downsample(hr, self.scale)
        height, width = hr.shape[-2:]
        if height != width:
            raise ValueError("The realesrgan degradation expects square crops.")
        if height not in self._pipelines:
            self._pipelines[height] = _second_order_pipeline(self.scale, height)
        pipeline = self._pipelines[height]
        pipeline.set_random_seed(int(seed) % (2**32))
        image = (hr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        lr = pipeline(image=image)["image"]
        return torch.from_numpy(lr.astype(np.float32) / 255).permute(2, 0, 1).contiguous()
