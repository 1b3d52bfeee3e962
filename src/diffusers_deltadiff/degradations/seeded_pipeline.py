"""An albumentations pipeline as a degradation `(hr, seed) -> lr`: built once per HR size, seeded per call."""

import threading

import numpy as np
import torch

from .contract import fold_seed


class SeededPipeline:
    """
    `(hr, seed) -> lr` through the albumentations pipeline `build(height, width, scale)` (a module-level function),
    one per HR size, 8-bit output. The pipeline's random state is shared, so seeding and running it are one locked
    step: the same `(hr, seed)` gives the same LR whatever ran before and in whichever thread. It pickles (spawned
    data-loader workers), the pipelines rebuilt on first use.
    """

    build = None  # set by each subclass: `staticmethod(function)`

    def __init__(self, scale: int = 4):
        self.scale = scale
        self._pipelines = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"scale": self.scale}

    def __setstate__(self, state: dict):
        self.__init__(state["scale"])

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        height, width = hr.shape[-2:]
        image = np.ascontiguousarray(hr.permute(1, 2, 0).float().numpy())
        with self._lock:
            if (height, width) not in self._pipelines:
                self._pipelines[(height, width)] = self.build(height, width, self.scale)
            pipeline = self._pipelines[(height, width)]
            pipeline.set_random_seed(fold_seed(int(seed)))
            lr = np.clip(pipeline(image=image)["image"], 0, 1)
        return torch.from_numpy((lr * 255).round().astype(np.float32) / 255).permute(2, 0, 1).contiguous()
