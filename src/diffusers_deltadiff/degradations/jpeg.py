"""A web image: the bicubic LR of the protocol, saved as JPEG (libjpeg through PIL, 4:2:0 chroma, as PIL saves)."""

import io

import numpy as np
import PIL.Image
import torch

from ..image_utils import to_pil, to_unit_tensor
from .bicubic import bicubic_downsample


def jpeg_roundtrip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """A `(3, H, W)` image in `[0, 1]` encoded as JPEG at `quality` and decoded again."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return to_unit_tensor(PIL.Image.open(buffer).convert("RGB"))


class BicubicJPEG:
    """`(hr, seed) -> lr`: bicubic downscaling by `scale`, then JPEG at `quality` (or one drawn from `qualities`)."""

    def __init__(self, scale: int = 4, quality: int | None = None, qualities: tuple[int, int] = (30, 95)):
        self.scale, self.quality, self.qualities = scale, quality, qualities

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        quality = self.quality
        if quality is None:
            quality = int(np.random.default_rng(seed).integers(self.qualities[0], self.qualities[1] + 1))
        return jpeg_roundtrip(bicubic_downsample(hr, self.scale), quality)
