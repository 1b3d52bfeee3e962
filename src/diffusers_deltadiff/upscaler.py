"""
What the evaluation runs: anything that makes a high-resolution image from a low-resolution one.

An [`Upscaler`] is called on one `(3, h, w)` image in `[0, 1]` and returns a `(3, h * scale, w * scale)` image in
`[0, 1]` (the evaluation crops anything larger to the HR size). Its `stochastic` property says whether the output
depends on the generator: a stochastic upscaler is scored once per seed, a deterministic one once.

A DeltaDiff pipeline is one through [`PipelineUpscaler`]; the baselines (`diffusers_deltadiff.baselines`: bicubic,
FSRCNN, ...) are upscalers themselves.
"""

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Upscaler(Protocol):
    """The evaluation's view of a super-resolution method (see the module docstring)."""

    @property
    def stochastic(self) -> bool: ...

    def __call__(self, lr: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor: ...


class PipelineUpscaler:
    """
    A super-resolution pipeline (a `DeltaDiffPipeline`) as an [`Upscaler`]: stochastic when its scheduler is not
    deterministic (ResShift). `call_kwargs` go to every call of the pipeline (`num_inference_steps`, `tile_size`, ...).
    """

    def __init__(self, pipe, **call_kwargs):
        self.pipe, self.call_kwargs = pipe, call_kwargs

    @property
    def stochastic(self) -> bool:
        return not self.pipe.scheduler.is_deterministic

    def __call__(self, lr: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.pipe(lr, output_type="pt", generator=generator, **self.call_kwargs).images[0]


def as_upscaler(method, **call_kwargs) -> Upscaler:
    """`method` itself when it is an [`Upscaler`], else the pipeline `method` wrapped with `call_kwargs`."""
    if isinstance(method, Upscaler):
        return method
    return PipelineUpscaler(method, **call_kwargs)
