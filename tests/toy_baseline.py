"""
A toy baseline, written as a contributor adds one: this file in `src/diffusers_deltadiff/baselines/` and one line in
`BASELINES` (`"nearest": load_nearest,`). The tests register it with `monkeypatch.setitem(BASELINES, ...)` instead
of that line, and change nothing else.
"""

import torch


class Nearest:
    """Nearest-neighbour upscaling by `scale`; with `stochastic`, plus one offset drawn from the generator."""

    def __init__(self, scale: int = 4, stochastic: bool = False):
        self.scale, self.stochastic = scale, stochastic

    def __call__(self, lr: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        sr = lr.repeat_interleave(self.scale, dim=1).repeat_interleave(self.scale, dim=2)
        if self.stochastic:
            sr = (sr + 0.1 * torch.rand((), generator=generator)).clamp(0, 1)
        return sr


def load_nearest(folder: str | None, scale: int) -> Nearest:
    """The registry's loader: `(folder, scale) -> upscaler` (nearest-neighbour has no weights to read)."""
    return Nearest(scale)
