"""Bicubic upscaling, the protocol's own: PIL's bicubic through 8 bits (the same resampler as the LR images)."""

import torch

from ..image_utils import bicubic_resize


class Bicubic:
    """PIL bicubic upscaling by `scale` ([`~diffusers_deltadiff.image_utils.bicubic_resize`]), deterministic."""

    stochastic = False

    def __init__(self, scale: int = 4):
        self.scale = scale

    def __call__(self, lr: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return bicubic_resize(lr, (lr.shape[1] * self.scale, lr.shape[2] * self.scale))
