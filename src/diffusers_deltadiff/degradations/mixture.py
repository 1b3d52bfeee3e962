"""The real-world model's training mix: some clean bicubic LR, some web JPEGs, most of it Real-ESRGAN's model."""

import numpy as np
import torch

from .bicubic import bicubic_downsample
from .jpeg import BicubicJPEG
from .second_order import SecondOrder


class Mixture:
    """
    `(hr, seed) -> lr`, one of `bicubic`, `jpeg` and `realesrgan` drawn per sample with `weights` (0.2 / 0.2 / 0.6):
    the clean share keeps what the model does on clean inputs, the JPEG share covers web images, which the
    second-order model (blur first, always) seldom makes alone.
    """

    def __init__(self, scale: int = 4, weights: tuple[float, float, float] = (0.2, 0.2, 0.6)):
        self.scale = scale
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.jpeg = BicubicJPEG(scale)
        self.second_order = SecondOrder(scale)

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        branch = int(rng.choice(3, p=self.weights))
        inner_seed = int(rng.integers(2**32))
        if branch == 0:
            return bicubic_downsample(hr, self.scale)
        if branch == 1:
            return self.jpeg(hr, inner_seed)
        return self.second_order(hr, inner_seed)
