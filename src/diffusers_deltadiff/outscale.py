"""Any output size: run the model of the nearest factor at or above, then resize with an antialiased filter.

    >>> from diffusers_deltadiff.outscale import upscale
    >>> upscale(image, outscale=3)  # x4 model, then resized to 3x: Real-ESRGAN's `--outscale`
    >>> upscale(image, width=3840)  # fit to 3840 pixels wide, the aspect ratio kept

The name follows Real-ESRGAN's `--outscale`. The resize is PIL's Lanczos for 8-bit images (antialiased: its kernel
widens with the reduction) and antialiased bicubic (`torch.nn.functional.interpolate(..., antialias=True)`) for float
outputs (16-bit files), so that the factor's extra pixels are averaged, not dropped.
"""

import math
import numbers

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F


# the longest side an output can have: what Pillow's and torch's image sizes (C ints) hold
MAX_SIDE = 2**31 - 1


def target_size(
    size: tuple[int, int], outscale: float | None = None, width: int | None = None, height: int | None = None
) -> tuple[int, int]:
    """
    The output `(width, height)` for an input of `size` `(width, height)`: `outscale` times it (rounded), or `width`
    and/or `height` (one alone keeps the aspect ratio), at least 1 x 1 and at most `MAX_SIDE` on a side. A
    `ValueError` names what is wrong (`True` is not a number here).
    """
    if outscale is not None and (width is not None or height is not None):
        raise ValueError("pass `outscale` or a target `width` / `height`, not both")
    given = [(name, value) for name, value in (("outscale", outscale), ("width", width), ("height", height))]
    for name, value in given:
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)  # NumPy's numbers too
        if value is not None and not (number and math.isfinite(value) and value > 0):
            raise ValueError(f"`{name}` must be a positive number, got {value!r}")
    in_width, in_height = size
    if outscale is None and width is None and height is None:
        raise ValueError("pass `outscale`, `width` or `height`")
    # as Python floats: a NumPy `int8(3)` times a width would wrap around
    outscale, width, height = (None if value is None else float(value) for _, value in given)
    if outscale is None:
        ratio = width / in_width if width is not None else height / in_height
        width = width if width is not None else in_width * ratio
        height = height if height is not None else in_height * ratio
    else:
        width, height = in_width * outscale, in_height * outscale
    if not max(width, height) <= MAX_SIDE:  # also inf, where the product overflowed
        name, value = next((name, value) for name, value in given if value is not None)
        raise ValueError(f"`{name}` {value:g} makes a result too large (more than {MAX_SIDE} pixels on a side)")
    return max(1, round(width)), max(1, round(height))


def model_factor(needed: float, factors: list[int]) -> int:
    """The factor to run for a `needed` one: the smallest of `factors` at or above it, else the largest."""
    if not factors:
        raise ValueError("no model factor to choose from")
    above = [factor for factor in factors if factor >= needed - 1e-9]
    return min(above) if above else max(factors)


def resize_output(image, size: tuple[int, int]):
    """
    `image` resized to `size` `(width, height)` with an antialiased filter, in its own kind: a PIL image (Lanczos),
    a float tensor `(3, H, W)` / `(B, 3, H, W)` or array `(H, W, 3)` / `(B, H, W, 3)` in `[0, 1]` (bicubic with
    antialiasing, clamped to `[0, 1]`). An image already of that size is returned as it is.
    """
    if isinstance(image, PIL.Image.Image):
        return image if image.size == tuple(size) else image.resize(tuple(size), PIL.Image.LANCZOS)
    if isinstance(image, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(image)).movedim(-1, -3)
        return resize_output(batch, size).movedim(-3, -1).numpy()
    if tuple(image.shape[-2:]) == (size[1], size[0]):
        return image
    batch = image if image.ndim == 4 else image[None]
    resized = F.interpolate(batch.float(), size=(size[1], size[0]), mode="bicubic", antialias=True)
    resized = resized.clamp(0, 1).to(image.dtype)
    return resized if image.ndim == 4 else resized[0]


def image_size(image) -> tuple[int, int]:
    """
    `(width, height)` of one image as the pipeline takes it (PIL, `[1x]HxW[xC]` array, `[1x][C]xHxW` tensor); a
    `ValueError` for a batch of several.
    """
    if isinstance(image, PIL.Image.Image):
        return image.size
    if image.ndim == 4 and image.shape[0] != 1:
        raise ValueError(f"`upscale` takes one image, got a batch of {image.shape[0]}")
    if isinstance(image, np.ndarray):
        return (image.shape[2], image.shape[1]) if image.ndim == 4 else (image.shape[1], image.shape[0])
    return image.shape[-1], image.shape[-2]


def upscale(
    image,
    outscale: float | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    pipe=None,
    output_type: str = "pil",
    **call_kwargs,
):
    """
    One image upscaled to any size: `outscale` times its size, or to `width` and/or `height`. `pipe` runs (any
    `DeltaDiffPipeline`); by default the shipped model of the smallest factor at or above the one needed (else the
    largest) is loaded. The model's output is then resized ([`resize_output`]). Returns one image of `output_type`
    (`"pil"`, `"np"` `(H, W, 3)` or `"pt"` `(3, H, W)`); `call_kwargs` go to the pipeline (`tile_size`, ...).
    """
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt' (an image to resize), got {output_type!r}")
    size = target_size(image_size(image), outscale, width, height)
    if pipe is None:
        from .pretrained import load_default_pipeline, shipped_scales

        in_width, in_height = image_size(image)
        needed = max(size[0] / in_width, size[1] / in_height)
        pipe = load_default_pipeline(scale=model_factor(needed, shipped_scales()))
        pipe.set_progress_bar_config(disable=True)
    upscaled = pipe(image, output_type=output_type, **call_kwargs).images[0]
    return resize_output(upscaled, size)
