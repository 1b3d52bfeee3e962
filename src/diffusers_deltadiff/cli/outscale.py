"""`upscale --outscale / --width / --height`: any output size (the model of the nearest factor at or above, then an
antialiased resize; [`~outscale`])."""

import argparse
import math

from ..arguments import int_at_least


EXIF_ORIENTATION = 0x0112


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def add_outscale_options(parser):
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--outscale",
        type=positive_float,
        default=None,
        help="final factor, any number above 0 (e.g. 3 or 1.5): the shipped model of the nearest factor at or above "
        "runs (or --model / --scale's), then the result is resized (Lanczos, antialiased)",
    )
    size.add_argument("--width", type=int_at_least(1), default=None, help="final width (keeps the aspect ratio)")
    size.add_argument("--height", type=int_at_least(1), default=None, help="final height (keeps the aspect ratio)")


def outscale_model_factor(args) -> int | None:
    """
    The factor of the shipped model to load for `--outscale` (none given by --model / --scale), else `None`; `None`
    with `--denoise` too, whose blend is x4 only.
    """
    if getattr(args, "outscale", None) is None or args.model is not None or args.scale is not None:
        return None
    if getattr(args, "denoise", None) is not None:
        return None
    from ..outscale import model_factor
    from ..pretrained import shipped_scales

    return model_factor(args.outscale, shipped_scales() or [4])


def requested_size(source, args) -> tuple[int, int] | None:
    """
    The output `(width, height)` the flags ask for, for the input image `source`, or `None` (no size flag). Worked out
    before the model runs, so that a size no image can have (`--outscale 1e30`) fails the input at once: a
    `ValueError` naming the flag. `--width` and `--height` are those of the image as shown: an EXIF orientation that
    turns it (a camera's portrait JPEG) swaps them, as the output keeps the stored pixels and the tag.
    """
    outscale, width, height = (getattr(args, name, None) for name in ("outscale", "width", "height"))
    if outscale is None and width is None and height is None:
        return None
    from ..outscale import target_size

    if exif_turned(source):
        return target_size(source.size[::-1], outscale, width, height)[::-1]
    return target_size(source.size, outscale, width, height)


def exif_turned(image) -> bool:
    """Whether `image`'s EXIF orientation turns it by a quarter (5 to 8: shown with width and height swapped)."""
    try:
        return image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - an unreadable EXIF block is shown as stored
        return False


def resize_to_target(sr, size: tuple[int, int] | None):
    """The model's output `sr` (PIL image or `(3, H, W)` tensor) resized to `size` ([`requested_size`]), if any."""
    if size is None:
        return sr
    from ..outscale import resize_output

    return resize_output(sr, size)
