"""The real-world model's training mix: clean bicubic LR, web JPEGs, mild camera degradations and Real-ESRGAN's."""

import numpy as np
import torch

from .aliased import Aliased
from .bicubic import Bicubic
from .camera import Camera
from .first_order import FirstOrder
from .jpeg import BicubicJPEG
from .second_order import SecondOrder


class Mixture:
    """
    `(hr, seed) -> lr`, one of `bicubic`, `jpeg`, `mild` ([`~first_order.FirstOrder`]), `realesrgan` and, with a
    fifth weight, `aliased` ([`~aliased.Aliased`]), and with a sixth, `camera` ([`~camera.Camera`]), drawn per sample with `weights`. The default,
    0.15 / 0.25 / 0.30 / 0.30, replaced a first mix of 0.2 / 0.2 / 0 / 0.6
    (`realworld-heavy`) that, dominated by the worst case, learned to smooth: it fell short of the clean model on
    real camera pairs (docs/performance.md, "Real-world inputs"). `jpeg_qualities` is the quality range of the `jpeg`
    branch (`realworld-jpeg` draws 20-80 instead of 30-95, for the second stage that targets JPEG blocks).
    """

    def __init__(
        self,
        scale: int = 4,
        weights: tuple[float, ...] = (0.15, 0.25, 0.30, 0.30),
        jpeg_qualities: tuple[int, int] = (30, 95),
    ):
        if len(weights) not in (4, 5, 6):
            raise ValueError(
                f"Mixture takes 4 to 6 weights (bicubic, jpeg, mild, realesrgan[, aliased[, camera]]), got {weights}"
            )
        self.scale = scale
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.branches = [
            Bicubic(scale),
            BicubicJPEG(scale, qualities=jpeg_qualities),
            FirstOrder(scale),
            SecondOrder(scale),
            Aliased(scale),
            Camera(scale),
        ][: len(self.weights)]

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        branch = int(rng.choice(len(self.branches), p=self.weights))
        return self.branches[branch](hr, int(rng.integers(2**32)))
