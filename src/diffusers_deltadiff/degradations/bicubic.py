"""The benchmarks' LR protocol: PIL's antialiased bicubic downscaling, 8 bits."""

import torch

from ..image_utils import bicubic_resize


def bicubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """
    The LR protocol, for training, validation and evaluation alike: PIL's antialiased bicubic downscaling by `scale`
    ([`~image_utils.bicubic_resize`], 8 bits) of `(B, 3, H, W)` or `(3, H, W)` images in `[0, 1]`.
    """
    batched = hr if hr.ndim == 4 else hr[None]
    size = (batched.shape[-2] // scale, batched.shape[-1] // scale)
    lr = torch.stack([bicubic_resize(image.float().cpu(), size) for image in batched]).to(hr.device)
    return lr if hr.ndim == 4 else lr[0]


class Bicubic:
    """`(hr, seed) -> lr`: [`bicubic_downsample`] by `scale`, the seed unused (a class, so that it pickles)."""

    def __init__(self, scale: int = 4):
        self.scale = scale

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        return bicubic_downsample(hr, self.scale)
