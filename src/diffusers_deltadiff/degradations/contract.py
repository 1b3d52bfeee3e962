"""
What every registered degradation promises, checked where [`Degradation`] hands one out: a `(3, H, W)` floating
image at least `scale` pixels a side goes in (a one-line `ValueError` naming the problem otherwise, not an error from
deep inside PIL or OpenCV), and any non-negative integer is a seed.
"""

import operator

import numpy as np
import torch


def fold_seed(seed: int) -> int:
    """
    `seed` as a 32-bit seed, for generators that keep no more (albumentations; `torch.Generator` on the CPU): itself
    when it fits, so the seeds in use keep their images; a larger one hashed (NumPy's `SeedSequence`), not wrapped,
    so that `2**32` does not give seed 0's image.
    """
    seed = check_seed(seed)
    if seed < 2**32:
        return seed
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])


def integer_at_least(value, minimum: int, what: str) -> int:
    """`value` as a Python `int` (NumPy integers too, not `True` or `1.0`) of at least `minimum`, else a ValueError."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise ValueError(f"{what} is an integer of at least {minimum}, got {value!r}")
    return number


def check_seed(seed) -> int:
    """`seed` as a Python `int`: seeds are non-negative integers."""
    return integer_at_least(seed, 0, "a degradation's seed")


def check_scale(scale) -> int:
    return integer_at_least(scale, 1, "a degradation's scale")


def check_hr(hr, scale: int):
    """`hr` is a `(3, H, W)` floating tensor (values in `[0, 1]`) with at least one LR pixel at `scale`."""
    if not isinstance(hr, torch.Tensor) or hr.ndim != 3 or hr.shape[0] != 3 or not hr.is_floating_point():
        got = f"a {tuple(hr.shape)} {hr.dtype} tensor" if isinstance(hr, torch.Tensor) else type(hr).__name__
        raise ValueError(f"a degradation takes one (3, H, W) floating image in [0, 1] (RGB), got {got}")
    height, width = hr.shape[-2:]
    if min(height, width) < scale:
        raise ValueError(f"the HR image is {width}x{height}, smaller than the factor {scale}: it has no LR pixel")


class CheckedDegradation:
    """`degrade` with its input and seed checked first (see the module); picklable when `degrade` is."""

    def __init__(self, kind: str, scale: int, degrade):
        self.kind, self.scale, self.degrade = kind, scale, degrade

    def __call__(self, hr: torch.Tensor, seed: int) -> torch.Tensor:
        check_hr(hr, self.scale)
        return self.degrade(hr, check_seed(seed))

    def __repr__(self) -> str:
        return f"Degradation({self.kind!r}, scale={self.scale})"
