"""Low-resolution input handling shared by the pipeline, the training scripts and the command line.

Training and inference must build `y` (the latent of the bicubic-upsampled LR image) with the very same resampling,
so both call [`bicubic_upsample`] from here.
"""

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F


def bicubic_upsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling of `(B, C, H, W)` images in `[-1, 1]` by an integer factor, clamped back to `[-1, 1]`."""
    if scale == 1:
        return images
    upsampled = F.interpolate(images, scale_factor=scale, mode="bicubic", align_corners=False)
    return upsampled.clamp(-1.0, 1.0)


def resize_to(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize `(B, C, H, W)` images in `[-1, 1]` to `size` (antialiased bicubic), a no-op when already that size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(-1.0, 1.0)


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """
    Pad `(B, C, H, W)` images at the bottom and right so that `H` and `W` are multiples of `multiple`.

    Reflection padding is used where the image is large enough, replication otherwise. Crop the result of a
    fully-convolutional model back with `[..., :H * s, :W * s]`.
    """
    height, width = images.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def _array_to_unit_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype == bool:
        return array.astype(np.float32)
    return array.astype(np.float32)


def _channels_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """`(C, H, W)` with C in {1, 2, 3, 4} to RGB: gray is replicated, a trailing alpha channel is dropped."""
    channels = image.shape[0]
    if channels in (1, 2):
        return image[:1].expand(3, -1, -1)
    if channels in (3, 4):
        return image[:3]
    raise ValueError(f"Expected an image with 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels, got {channels}.")


def pil_to_unit_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """A PIL image of any mode as an RGB `(3, H, W)` float tensor in `[0, 1]` (16-bit images keep their depth)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        array = array / (65535.0 if image.mode != "I" or array.max() > 255 else 255.0)
        return _channels_to_rgb(torch.from_numpy(np.clip(array, 0, 1))[None])
    if image.mode not in ("RGB", "L"):
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
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return list(image)
    if isinstance(image, torch.Tensor) and image.ndim == 4:
        return list(image)
    return [image]


def to_unit_tensor(image) -> torch.Tensor:
    """
    One image as an RGB `(3, H, W)` float tensor in `[0, 1]`.

    Accepts PIL images (any mode: grayscale is replicated to RGB, alpha is dropped, palettes are expanded, 16-bit
    grayscale keeps its depth), NumPy arrays `HxW` or `HxWxC` (uint8, uint16, or float in `[0, 1]`) and torch tensors
    `CxH xW` or `HxW` (float in `[0, 1]`), with C in 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA).
    """
    if isinstance(image, PIL.Image.Image):
        return pil_to_unit_tensor(image)
    if isinstance(image, np.ndarray):
        array = _array_to_unit_float(image)
        tensor = torch.from_numpy(array.copy())
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return _channels_to_rgb(tensor)
    if isinstance(image, torch.Tensor):
        tensor = image.float()
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3:
            raise ValueError(f"Expected a CxHxW or HxW tensor, got shape {tuple(image.shape)}.")
        return _channels_to_rgb(tensor)
    raise TypeError(f"Unsupported image type {type(image).__name__}: use PIL images, NumPy arrays or torch tensors.")
