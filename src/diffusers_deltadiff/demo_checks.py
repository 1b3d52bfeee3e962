"""The demo's checks of a request (`gr.Error`s naming what is wrong): its cost, its controls, its output scale, and
the upload itself, read as `deltadiff upscale` reads its inputs."""

import math
import threading
from pathlib import Path

import gradio as gr
import PIL.Image

from .console import one_line
from .image_io import open_input
from .outscale import target_size


# the tile controls' range (latent pixels); the API is held to it too
MIN_TILE_SIZE, MAX_TILE_SIZE, MAX_TILE_CONTEXT = 16, 512, 64

# `open_input` sets Pillow's global pixel limit while it reads; the preview and the run may read at the same time
_open_lock = threading.Lock()


def check_cost(pipe, image: PIL.Image.Image, max_pixels: int | None, name: str, tile_size=None, tile_context=None):
    """
    Refuse a request whose work, the UNet pixels one step runs with the request's own tile settings (every tile with
    its context: [`DeltaDiffPipeline.unet_pixels`]), exceeds a fixed budget: the work of the largest square the pixel
    limit admits, run with the model's default tiling. Thin strips, tiny tiles and wide contexts cost far more than
    the image's pixel count says; the budget does not move with the request's settings.
    """
    if not max_pixels:
        return
    tile_size = int(tile_size) if tile_size is not None else None
    tile_context = int(tile_context) if tile_context is not None else None
    side = int(max_pixels**0.5)
    default = (pipe.config.default_tile_size, pipe.config.tile_context)  # what the page starts with
    budget = max(pipe.unet_pixels((side, side)), pipe.unet_pixels((side, side), *default))  # not the request's
    work = pipe.unet_pixels((image.height, image.width), tile_size, tile_context)
    if work > budget:
        raise gr.Error(
            f"{name}: a {image.width}x{image.height} image costs as much as {work / budget:.1f} times the largest "
            f"image this demo takes (about {side}x{side}, default tiles) with these tile settings; use larger tiles or "
            "less context, crop it, or run `deltadiff upscale` on it"
        )


def checked_controls(pipe, steps, tile_size, tile_context) -> tuple[int, int, int]:
    """
    The step count and tile settings as integers within what the page offers (the API takes any number): reverse
    steps 1 to the model's most, tile size 0 (never tile) or from `MIN_TILE_SIZE`, tile context up to
    `MAX_TILE_CONTEXT`; anything else is a `gr.Error` naming the control.
    """
    most = pipe.scheduler.config.num_train_timesteps
    limits = {
        "reverse steps": (steps, 1, most),
        "tile size": (tile_size, 0, MAX_TILE_SIZE),
        "tile context": (tile_context, 0, MAX_TILE_CONTEXT),
    }
    values = []
    for name, (value, low, high) in limits.items():
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")
        if not (math.isfinite(number) and number == int(number) and low <= number <= high):
            raise gr.Error(f"{name}: must be a whole number from {low} to {high}, got {value!r}")
        values.append(int(number))
    if 0 < values[1] < MIN_TILE_SIZE:
        raise gr.Error(f"tile size: must be 0 (never tile) or at least {MIN_TILE_SIZE}, got {values[1]}")
    return tuple(values)


def checked_outscale(value) -> float | None:
    """
    The *Output scale* control's value: `None` (the model's own factor) when empty or 0, else a positive number;
    anything else is a `gr.Error` with [`~outscale.target_size`]'s message (`outscale` must be a positive number).
    """
    if value is None or value == "" or (type(value) in (int, float) and value == 0):
        return None
    try:
        target_size((1, 1), value)  # its checks, and its message
    except ValueError as err:
        raise gr.Error(str(err)) from err
    return float(value)


def output_size(image: PIL.Image.Image, outscale: float | None, scale: int, max_pixels: int | None, name: str):
    """
    The result's `(width, height)` for an output scale ([`~outscale.target_size`]), or `None` where it is the
    model's own size. A result with more pixels than the model makes from the largest image admitted is refused.
    """
    if outscale is None:
        return None
    try:
        size = target_size(image.size, outscale)
    except ValueError as err:  # too large to be an image at all
        raise gr.Error(f"{name}: {err}") from err
    if size == (image.width * scale, image.height * scale):
        return None
    if max_pixels and size[0] * size[1] > max_pixels * scale**2:
        side = int(max_pixels**0.5) * scale
        raise gr.Error(
            f"{name}: output scale {outscale:g} makes a {size[0]}x{size[1]} result, larger than this demo makes "
            f"(about {side}x{side}); use a smaller output scale, or run `deltadiff upscale --outscale` on it"
        )
    return size


def read_upload(path: str | None, max_pixels: int | None) -> PIL.Image.Image:
    """Open an uploaded file like `deltadiff upscale` does; every problem is a `gr.Error` naming the file."""
    if not path:
        raise gr.Error("Upload an image first.")
    name = Path(path).name
    try:
        with _open_lock:
            return open_input(Path(path), max_pixels)
    except ValueError as err:
        if isinstance(err.__cause__, (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning)):
            side = int(max_pixels**0.5)
            raise gr.Error(
                f"{name}: image too large for this demo (more than {max_pixels:,} pixels, about {side}x{side}); "
                "downscale it or run `deltadiff upscale` on it"
            ) from err
        raise gr.Error(f"{name}: {str(err).splitlines()[0]}") from err
    except OSError as err:
        raise gr.Error(f"{name}: unreadable file ({one_line(err)})") from err
