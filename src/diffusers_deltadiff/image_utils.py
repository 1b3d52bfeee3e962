"""Image handling shared by the pipeline, the training scripts, the evaluation and the command line.

Resamplers, one job each:

- [`bicubic_upsample`]: LR to output size inside the chain (torch, any device), for `y`; training and inference
  both get it through [`~pipeline_deltadiff.encode_lr`].
- [`resize_to`]: LR to the latent size, the UNet's conditioning (the identity for x4 with an f4 latent).
- [`bicubic_resize`]: PIL bicubic, the benchmarks' resampler; [`~degradations.bicubic_downsample`] makes every LR
  image of training, validation and evaluation with it.
"""

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F


def lacks_bicubic_kernel(device: torch.device, antialias: bool, version: str = torch.__version__) -> bool:
    """
    Whether torch `version` has no bicubic interpolation kernel on `device`: Apple's MPS gained plain bicubic in
    torch 2.6 and the antialiased one in 2.8 (the package allows torch 2.1 and later).
    """
    if torch.device(device).type != "mps":
        return False
    major, minor = (int(part) for part in version.split("+")[0].split(".")[:2])
    return (major, minor) < ((2, 8) if antialias else (2, 6))


def interpolate_bicubic(images: torch.Tensor, antialias: bool = False, **size) -> torch.Tensor:
    """
    `F.interpolate(mode="bicubic")` (`size=` or `scale_factor=`) on any device: where the device has no kernel for
    it ([`lacks_bicubic_kernel`]), on the CPU in float32 and back.
    """
    if lacks_bicubic_kernel(images.device, antialias):
        on_cpu = F.interpolate(images.float().cpu(), mode="bicubic", align_corners=False, antialias=antialias, **size)
        return on_cpu.to(images.device, images.dtype)
    return F.interpolate(images, mode="bicubic", align_corners=False, antialias=antialias, **size)


def bicubic_upsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling of `(B, C, H, W)` images in `[-1, 1]` by an integer factor, clamped back to `[-1, 1]`."""
    if scale == 1:
        return images
    return interpolate_bicubic(images, scale_factor=scale).clamp(-1.0, 1.0)


def resize_to(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize `(B, C, H, W)` images in `[-1, 1]` to `size` (antialiased bicubic), a no-op when already that size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return interpolate_bicubic(images, antialias=True, size=size).clamp(-1.0, 1.0)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """RGB images `(B, 3, H, W)` made gray with their BT.601 luma (the Y the benchmarks score), in every channel."""
    luma = 0.299 * images[:, 0:1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3]
    return luma.expand(-1, 3, -1, -1)


def center_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centre `height` x `width` of `(..., H, W)` images (at most their size)."""
    height, width = min(height, images.shape[-2]), min(width, images.shape[-1])
    top, left = (images.shape[-2] - height) // 2, (images.shape[-1] - width) // 2
    return images[..., top : top + height, left : left + width]


def pad_to(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """
    Pad `(B, C, H, W)` images at the bottom and right to at least `height` x `width`: by reflection where the image is
    large enough, by replication otherwise.
    """
    pad_h, pad_w = max(height - images.shape[-2], 0), max(width - images.shape[-1], 0)
    if pad_h == 0 and pad_w == 0:
        return images
    mode = "reflect" if pad_h < images.shape[-2] and pad_w < images.shape[-1] else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def pad_border(image: torch.Tensor, pad: int) -> torch.Tensor:
    """
    `(C, H, W)` grown by `pad` pixels on every side by reflection (edge replication where the image is too small to
    reflect), so that a convolutional model sees image-like content, not zeros, beyond the image's edges.
    """
    if pad <= 0:
        return image
    mode = "reflect" if min(image.shape[-2:]) > pad else "replicate"
    return F.pad(image[None], (pad, pad, pad, pad), mode=mode)[0]


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """
    [`pad_to`] the next multiple of `multiple` in height and width. Crop the result of a fully-convolutional model
    back with `[..., :H * s, :W * s]`.
    """
    height, width = images.shape[-2:]
    return pad_to(images, height + -height % multiple, width + -width % multiple)


# float images may stray from [0, 1] by less than half an 8-bit level (rounding); further out they are 0-255 or
# [-1, 1] data, which would come out washed out or dark
UNIT_RANGE_TOLERANCE = 0.5 / 255


def _check_unit_range(finite: bool, low: float, high: float):
    if not finite:
        raise ValueError("The image holds NaN or infinite values.")
    if low < -UNIT_RANGE_TOLERANCE or high > 1 + UNIT_RANGE_TOLERANCE:
        raise ValueError(
            f"Float images must be in [0, 1], got values in [{low:g}, {high:g}]: divide 0-255 data by 255 (or pass "
            "it as uint8), map [-1, 1] data with (x + 1) / 2."
        )


def unit_float_array(array: np.ndarray) -> np.ndarray:
    """A float image in `[0, 1]` as float32 (clamped), or a `ValueError` saying what is wrong with it."""
    array = np.asarray(array, dtype=np.float32)
    if array.size:
        _check_unit_range(bool(np.isfinite(array).all()), float(array.min()), float(array.max()))
    return np.clip(array, 0.0, 1.0)


def unit_float_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """[`unit_float_array`] for a tensor, on its device."""
    tensor = tensor.float()
    if tensor.numel():
        _check_unit_range(bool(tensor.isfinite().all()), float(tensor.min()), float(tensor.max()))
    return tensor.clamp(0.0, 1.0)


def _array_to_unit_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype.type is np.uint16:  # either byte order
        return array.astype(np.float32) / 65535.0
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        return unit_float_array(array)
    raise TypeError(f"Unsupported array dtype {array.dtype}: use uint8 (0-255), uint16 (0-65535) or float in [0, 1].")


def fill_transparent(colour: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """
    `colour` `(C, H, W)` with every fully transparent pixel (`alpha == 0`) given a colour pulled from the visible
    ones around it (push-pull: alpha-weighted means over a pyramid of 2x2 poolings), so that whatever a file stores
    under alpha 0 (often garbage) cannot bleed into visible pixels through the model's receptive field. Visible pixels
    are unchanged; an image with no visible pixel is returned as it is.
    """
    visible = alpha > 0
    if bool(visible.all()) or not bool(visible.any()):
        return colour
    return _push_pull(colour, visible.to(colour.dtype)[None])


def _push_pull(colour: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if bool((weight > 0).all()):
        return colour
    pooled = F.avg_pool2d((colour * weight)[None], 2, ceil_mode=True)[0]
    pooled_weight = F.avg_pool2d(weight[None], 2, ceil_mode=True)[0]
    seen = pooled_weight > 0
    coarse = torch.where(seen, pooled / pooled_weight.clamp_min(1e-12), torch.zeros_like(pooled))
    coarse = _push_pull(coarse, seen.to(colour.dtype))
    pulled = F.interpolate(coarse[None], size=tuple(colour.shape[-2:]), mode="nearest")[0]
    return torch.where(weight > 0, colour, pulled)


def _channels_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """
    `(C, H, W)` with C in {1, 2, 3, 4} to RGB: gray is replicated, a trailing alpha channel is dropped after the
    colour under fully transparent pixels is replaced ([`fill_transparent`]).
    """
    channels = image.shape[0]
    if channels == 1:
        return image.expand(3, -1, -1)
    if channels == 2:
        return fill_transparent(image[:1], image[1]).expand(3, -1, -1)
    if channels == 3:
        return image
    if channels == 4:
        return fill_transparent(image[:3], image[3])
    raise ValueError(f"Expected an image with 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels, got {channels}.")


def has_transparency(image: PIL.Image.Image) -> bool:
    """An alpha channel, or transparency marked by a palette index or a colour key (PNG's tRNS)."""
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return True
    return "transparency" in image.info and image.mode in ("P", "RGB", "L", "1")


def pil_to_unit_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """A PIL image of any mode as an RGB `(3, H, W)` float tensor in `[0, 1]` (16-bit images keep their depth)."""
    if image.mode == "F":  # 32-bit float grayscale (e.g. a float TIFF), in [0, 1] like float arrays
        return _channels_to_rgb(torch.from_numpy(unit_float_array(np.asarray(image)).copy())[None])
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        array = array / (65535.0 if image.mode != "I" or array.max() > 255 else 255.0)
        return _channels_to_rgb(torch.from_numpy(np.clip(array, 0, 1))[None])
    if has_transparency(image):
        image = image.convert("RGBA")  # the alpha is needed to keep hidden colour out ([`fill_transparent`])
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return _channels_to_rgb(tensor)


def split_images(image) -> list:
    """Split the pipeline's `image` argument into a list of single images (PIL, `HWC`/`HW` arrays, `CHW` tensors)."""
    if isinstance(image, (list, tuple)):
        images = []
        for item in image:
            images.extend(split_images(item))
        return images
    if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 4:
        return list(image)
    if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim > 4:
        raise ValueError(f"Expected one image or a batch (4 dimensions at most), got shape {tuple(image.shape)}.")
    return [image]


def check_image_shape(image: np.ndarray | torch.Tensor):
    """One image as an array (`HxW`, `HxWxC`) or tensor (`HxW`, `CxHxW`) with data and at least 1x1 pixels."""
    layout = "HxW or HxWxC" if isinstance(image, np.ndarray) else "HxW or CxHxW"
    kind = "array" if isinstance(image, np.ndarray) else "tensor"
    shape = tuple(image.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"Expected one image as an {layout} {kind} (or a batch of them), got shape {shape}.")
    spatial = shape[:2] if isinstance(image, np.ndarray) else shape[-2:]
    channels = None if len(shape) == 2 else (shape[2] if isinstance(image, np.ndarray) else shape[0])
    if 0 in spatial or channels == 0:
        raise ValueError(
            f"Expected an {layout} {kind} of at least 1x1 pixels with 1 to 4 channels, got shape {shape}."
        )
    if isinstance(image, torch.Tensor) and image.device.type == "meta":
        raise ValueError(f"Got a tensor on the meta device (shape {shape}): it holds no pixels to upscale.")


def to_unit_tensor(image) -> torch.Tensor:
    """
    One image as an RGB `(3, H, W)` float tensor in `[0, 1]`.

    Accepts PIL images (any mode: grayscale is replicated to RGB, alpha is dropped, palettes are expanded, 16-bit
    grayscale keeps its depth, 32-bit float grayscale is read in `[0, 1]`), NumPy arrays `HxW` or `HxWxC` (uint8,
    uint16, or float in `[0, 1]`) and torch tensors `CxHxW` or `HxW` (uint8, or float in `[0, 1]`), with C in 1 (gray),
    2 (gray + alpha), 3 (RGB) or 4 (RGBA). Float data outside `[0, 1]` (beyond rounding), NaN and infinity are
    rejected with a `ValueError`, other integer types with a `TypeError`.
    """
    if isinstance(image, PIL.Image.Image):
        if 0 in image.size:
            raise ValueError(f"Expected an image of at least 1x1 pixels, got a {image.size[0]}x{image.size[1]} image.")
        return pil_to_unit_tensor(image)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        check_image_shape(image)
    if isinstance(image, np.ndarray):
        array = _array_to_unit_float(image)
        tensor = torch.from_numpy(array.copy())
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return _channels_to_rgb(tensor)
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.uint8:
            tensor = image.float() / 255.0
        elif image.dtype == torch.bool:
            tensor = image.float()
        elif image.dtype.is_floating_point:
            tensor = unit_float_tensor(image)
        else:
            raise TypeError(f"Unsupported tensor dtype {image.dtype}: use uint8 (0-255) or float in [0, 1].")
        return _channels_to_rgb(tensor[None] if tensor.ndim == 2 else tensor)  # 2 or 3 dims: `check_image_shape`
    raise TypeError(f"Unsupported image type {type(image).__name__}: use PIL images, NumPy arrays or torch tensors.")


def image_grid(rows: list[list[torch.Tensor]]) -> PIL.Image.Image:
    """A grid of `(3, H, W)` images in `[0, 1]`: each row is concatenated left to right (smaller ones upscaled by
    nearest neighbour to the row's last image), rows are padded to one width."""
    strips = []
    for row in rows:
        height, width = row[-1].shape[-2:]
        resized = [F.interpolate(im[None], size=(height, width), mode="nearest")[0] for im in row]
        strips.append(torch.cat(resized, dim=-1))
    width = max(s.shape[-1] for s in strips)
    grid = torch.cat([F.pad(s, (0, width - s.shape[-1])) for s in strips], dim=-2)
    return PIL.Image.fromarray((grid.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8))


def to_pil(image: torch.Tensor) -> PIL.Image.Image:
    """`(3, H, W)` in `[0, 1]` to an 8-bit RGB PIL image."""
    return PIL.Image.fromarray((image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def bicubic_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """
    PIL bicubic resize (antialiased when downscaling) of a `(3, H, W)` image in `[0, 1]` to `size` (h, w), through
    8 bits: the benchmarks' resampler (the LR protocol of [`bicubic_downsample`], the bicubic baseline and the
    LR-consistency check).
    """
    return to_unit_tensor(to_pil(image).resize((size[1], size[0]), PIL.Image.BICUBIC))
