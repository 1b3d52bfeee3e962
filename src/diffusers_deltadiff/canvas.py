"""
The pipeline's outputs, one canvas per output kind: decoded tiles are pasted straight into it (a PIL image is painted
tile by tile, with no float copy of the whole image), then the canvases of a call become its `images`.
"""

import numpy as np
import PIL.Image
import torch


class Canvas:
    """`batch` output images of `size` `(height, width)`, filled by [`paste`] with images in `[0, 1]`."""

    def __init__(self, batch: int, size: tuple[int, int]):
        self.height, self.width = size

    def paste(self, box, images: torch.Tensor):
        """Write float images `(B, 3, h, w)` in `[0, 1]` (on the CPU) at `box` (a [`~tiling.Box`])."""
        raise NotImplementedError

    def result(self):
        """The images, in the form of this output kind."""
        return self.images


class TensorCanvas(Canvas):
    """`output_type="pt"`: a float32 tensor `(B, 3, H, W)`."""

    def __init__(self, batch: int, size: tuple[int, int]):
        super().__init__(batch, size)
        self.images = torch.empty(batch, 3, *size, dtype=torch.float32)

    def paste(self, box, images: torch.Tensor):
        box.crop(self.images)[...] = images


class ArrayCanvas(Canvas):
    """`output_type="np"`: a float32 array `(B, H, W, 3)`."""

    def __init__(self, batch: int, size: tuple[int, int]):
        super().__init__(batch, size)
        self.images = np.empty((batch, *size, 3), dtype=np.float32)

    def paste(self, box, images: torch.Tensor):
        self.images[:, box.top : box.bottom, box.left : box.right] = images.permute(0, 2, 3, 1).numpy()


class PILCanvas(Canvas):
    """`output_type="pil"`: RGB PIL images, 8 bits, painted tile by tile."""

    def __init__(self, batch: int, size: tuple[int, int]):
        super().__init__(batch, size)
        self.images = [PIL.Image.new("RGB", size[::-1]) for _ in range(batch)]

    def paste(self, box, images: torch.Tensor):
        for target, tile in zip(self.images, to_levels(images)):
            target.paste(PIL.Image.fromarray(tile), (box.left, box.top))


def to_levels(images: torch.Tensor) -> np.ndarray:
    """Images `(B, 3, H, W)` in `[0, 1]` as 8-bit levels `(B, H, W, 3)`: rounded half to even as numpy's `round`,
    on torch's threads (5x faster than numpy's one thread)."""
    return images.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


CANVASES = {"pt": TensorCanvas, "np": ArrayCanvas, "pil": PILCanvas}


def crop_border(images, pad: int, output_type: str):
    """Crop `pad` pixels from every side of every image of an output of `output_type` (a list, array or tensor)."""
    if not pad:
        return images

    def crop(image):
        if isinstance(image, PIL.Image.Image):
            return image.crop((pad, pad, image.width - pad, image.height - pad))
        if output_type == "np":  # (..., H, W, C)
            return image[..., pad:-pad, pad:-pad, :]
        return image[..., pad:-pad, pad:-pad]  # (..., C, H, W)

    return [crop(im) for im in images] if isinstance(images, list) else crop(images)


def assemble(results: list, output_type: str, order: list[int], one_size: bool):
    """
    The per-batch results (a canvas' `result()` or latents) as one output, in input order (`order`: the input index of
    each image, batch after batch). Images of `one_size` stay one array / tensor / list of PIL images; several sizes
    give a list of images.
    """
    if len(results) == 1 or (one_size and output_type == "pil"):
        images = [image for result in results for image in result] if len(results) > 1 else results[0]
    elif one_size:
        images = np.concatenate(results) if output_type == "np" else torch.cat(results)
    else:
        flat = [image for result in results for image in result]
        images = [flat[k] for k in sorted(range(len(order)), key=order.__getitem__)]
    return list(images) if output_type == "pil" else images
