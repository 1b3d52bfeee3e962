"""Image files in and out, for the command line and the demo: opening with the decompression-bomb guard (CMYK through
its ICC profile), converting the result to the input's mode, saving atomically with the metadata the output can
carry, and the strip of every reverse step.
"""

import contextlib
import io
import os
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from .atomic_files import write_file_atomic
from .console import one_line, warning
from .image_utils import has_transparency


FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}


GRAY_MODES = ("L", "1", "I;16", "I;16B", "I;16L", "I", "F")


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def missing_folders(folder: Path) -> tuple[Path, list[Path]]:
    """The nearest existing folder at or above `folder`, and the folders below it that do not exist yet (deepest first)."""
    missing = []
    while not os.path.exists(folder) and folder != folder.parent:  # a path too long to exist: False
        missing.append(folder)
        folder = folder.parent
    return folder, missing


def make_folders(folder: Path, created: list[Path]):
    """`mkdir -p`, remembering the folders it made in `created` (to remove them again if they stay empty)."""
    for path in reversed(missing_folders(folder)[1]):
        path.mkdir(exist_ok=True)
        created.append(path)


_pixel_limit_lock = threading.RLock()


@contextlib.contextmanager
def pixel_limit(limit: int | None):
    """Pillow's global decompression-bomb limit set to `limit` (`None`: none) while inside, one thread at a time."""
    with _pixel_limit_lock:
        before = PIL.Image.MAX_IMAGE_PIXELS
        PIL.Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            PIL.Image.MAX_IMAGE_PIXELS = before


def open_input(path: Path, max_pixels: int | None = None) -> PIL.Image.Image:
    """Open and decode an image, every problem as a `ValueError` with a one-line message."""
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        with pixel_limit(max_pixels or None), warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(path)
            tiles = list(getattr(image, "tile", None) or [])
            image.load()
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as err:
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{pixels.group(1)} pixels" if pixels else "too many pixels"
        raise ValueError(
            f"image too large ({size}, more than --max-pixels {max_pixels}): pass a larger --max-pixels (0: no "
            "limit) to upscale it on purpose"
        ) from err
    except PIL.UnidentifiedImageError as err:
        raise ValueError("not an image") from err
    except OSError as err:
        raise ValueError(f"unreadable image ({str(err).splitlines()[0]})") from err
    if image.mode in ("RGB", "RGBA") and any(";16" in str(getattr(tile, "args", "")) for tile in tiles):
        warning(f"{path}: 16 bits per colour channel, read as 8 bits (Pillow holds 16-bit colour only as gray)")
    if image.mode == "CMYK":
        image = cmyk_to_rgb(image, path)
    return image


def icc_profile(icc: bytes):
    """An ICC profile's `ImageCms.ImageCmsProfile`; `None` when it cannot be parsed."""
    try:
        from PIL import ImageCms

        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except Exception:  # noqa: BLE001 - an unreadable profile is reported by the caller
        return None


def icc_colour_space(icc: bytes) -> str | None:
    """`RGB`, `GRAY`, `CMYK`, ... of an ICC profile; `None` when it cannot be parsed."""
    profile = icc_profile(icc)
    return profile.profile.xcolor_space.strip() if profile is not None else None


def cmyk_to_rgb(image: PIL.Image.Image, path: Path) -> PIL.Image.Image:
    """A CMYK image as sRGB through its own ICC profile when it has a CMYK one (the profile is then used up)."""
    icc = image.info.get("icc_profile")
    info = {k: v for k, v in image.info.items() if k != "icc_profile"}
    source = icc_profile(icc) if icc else None
    if source is not None and source.profile.xcolor_space.strip() == "CMYK":
        try:
            from PIL import ImageCms

            rgb = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            rgb.info = info
            return rgb
        except Exception as err:  # noqa: BLE001 - fall back to Pillow's plain conversion, said once
            warning(f"{path}: its CMYK profile could not be applied ({one_line(err)}): plain CMYK to RGB")
    rgb = image.convert("RGB")
    rgb.info = info
    return rgb


def needs_float_output(source: PIL.Image.Image, fmt: str) -> bool:
    """16-bit PNG outputs need more than the pipeline's 8-bit PIL output."""
    return source.mode in HIGH_DEPTH_MODES and fmt == "PNG"


def to_output_image(sr: torch.Tensor | PIL.Image.Image, source: PIL.Image.Image, fmt: str) -> PIL.Image.Image:
    """
    The SR result (an RGB PIL image, or `(3, H, W)` in `[0, 1]`, needed for 16-bit outputs) in the input's kind: RGB,
    grayscale (8-bit, or 16-bit PNG for 16-bit and float inputs) or with its alpha.
    """
    mode = source.mode
    if needs_float_output(source, fmt):
        array = sr.clamp(0, 1).permute(1, 2, 0).float().numpy()
        return PIL.Image.fromarray((array.mean(axis=-1) * 65535).round().astype(np.uint16))
    if isinstance(sr, PIL.Image.Image):
        rgb = sr
    else:
        rgb = PIL.Image.fromarray((sr.clamp(0, 1).permute(1, 2, 0).float().numpy() * 255).round().astype(np.uint8))
    if has_transparency(source) and fmt != "JPEG":
        alpha = source.convert("RGBA").getchannel("A").resize(rgb.size, PIL.Image.BICUBIC)
        out = rgb.convert("L").convert("LA") if mode in ("LA", "L", "1") else rgb.convert("RGBA")
        out.putalpha(alpha)
        return out
    if mode in GRAY_MODES:
        return rgb.convert("L")
    return rgb


def flattened_for(image: PIL.Image.Image, fmt: str, path: Path) -> PIL.Image.Image:
    """
    The image to upscale for an output of `fmt`: `image` itself, or, where the format cannot store its transparency
    (JPEG), composited on a white background, as most tools do, with a warning; grayscale stays grayscale.
    """
    if fmt != "JPEG" or not has_transparency(image):
        return image
    warning(
        f"{path}: a JPEG output cannot keep its transparency: composited on a white background (write .png or .webp "
        "to keep it)"
    )
    rgba = image.convert("RGBA")
    flat = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    flat = flat.convert("L" if image.mode in ("L", "LA", "La", "1") else "RGB")
    flat.info = {key: value for key, value in image.info.items() if key != "transparency"}
    return flat


# zlib level of PNG outputs: 1, the fastest that compresses (OpenCV's default, so Real-ESRGAN's), encodes a 4-MP
# output 5x faster than Pillow's 6 for files about 18 % larger (docs/performance.md, "Backends")
PNG_COMPRESSION = 1


def save_atomic(
    image: PIL.Image.Image,
    dest: Path,
    fmt: str,
    quality: int,
    source: PIL.Image.Image,
    *,
    created=None,
    replace=False,
    png_compression: int = PNG_COMPRESSION,
):
    """
    Encode `image` in memory, check that it reads back, then write the file whole or not at all
    ([`atomic_files.write_file_atomic`]): a full disk or a failing write is an `OSError` and leaves no file. Without
    `replace`, a `dest` that exists (another run made it meanwhile) is an `AlreadyExists` error and is kept. `quality`
    is the JPEG / WebP quality, `png_compression` the PNG's zlib level (0 to 9).
    """
    metadata = output_metadata(image, source, dest)
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "PNG":
        options["compress_level"] = png_compression
    data = encoded(image, fmt, {**options, **metadata}) if metadata else None
    if data is None:
        if metadata:
            warning(f"{dest}: the input's metadata ({', '.join(metadata)}) made an unreadable file: dropped")
        data = encoded(image, fmt, options)
        if data is None:
            raise ValueError(f"cannot encode the result as {fmt}")
    make_folders(dest.parent, created if created is not None else [])
    write_file_atomic(dest, data.getbuffer(), replace=replace)


def output_metadata(image: PIL.Image.Image, source: PIL.Image.Image, dest: Path) -> dict:
    """
    The input's metadata that the output can carry: EXIF as it is (the pixels keep their stored orientation, so its
    orientation tag still holds), and the ICC profile only when it describes the output's colour space (a CMYK or
    unreadable profile on an RGB output would change its colours, so it is dropped with a warning).
    """
    metadata = {}
    if source.info.get("exif"):
        metadata["exif"] = source.info["exif"]
    icc = source.info.get("icc_profile")
    if icc:
        space = icc_colour_space(icc)
        wanted = "GRAY" if image.mode in ("L", "LA", "I;16", "I") else "RGB"
        if space == wanted:
            metadata["icc_profile"] = icc
        else:
            warning(
                f"{dest}: the input's ICC profile ({space or 'unreadable'}) does not fit a {wanted} output: dropped"
            )
    return metadata


def encoded(image: PIL.Image.Image, fmt: str, kwargs: dict) -> io.BytesIO | None:
    """
    `image` saved as `fmt` in memory, read back with Pillow's defaults; `None` when either fails (an encoder's error,
    or metadata that makes an unreadable file). Encoding in memory keeps the encoder away from the disk: Pillow's JPEG
    encoder writing to a file ignores a full disk and leaves a truncated file.
    """
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **kwargs)
        with pixel_limit(None), PIL.Image.open(io.BytesIO(buffer.getbuffer())) as check:  # its size is ours
            check.load()
    except (OSError, ValueError, SyntaxError):
        return None
    return buffer


def steps_strip(source: torch.Tensor, steps: list[torch.Tensor]) -> PIL.Image.Image:
    """The paper's Fig. 4: the bicubic-upsampled input, then the decoded image after every reverse step."""
    from .image_utils import bicubic_resize, to_pil

    height, width = steps[-1].shape[-2:]
    start = bicubic_resize(source, (height, width))
    return to_pil(torch.cat([start, *[s.clamp(0, 1) for s in steps]], dim=-1))
