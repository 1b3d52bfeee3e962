"""
Low-resolution images made from high-resolution ones, by name: the registry that the trainer (`--degradation`,
`--validation_degradation`), the command line (`deltadiff evaluate --degradation`) and the benchmarks read.

Every entry is a factory `scale -> degrade`, where `degrade(hr, seed) -> lr` maps a `(3, H, W)` image in `[0, 1]` to
`(3, H // scale, W // scale)` in `[0, 1]` (8-bit values), every random choice drawn from `seed`: the same
`(hr, seed)` always gives the same LR image.

To add a degradation, write it in a file of its own in this folder and add one line to `DEGRADATIONS`.
"""

from collections.abc import Callable
from functools import partial

import torch

from .aliased import Aliased
from .bicubic import Bicubic, bicubic_downsample
from .camera import Camera
from .contract import CheckedDegradation, check_scale
from .cv2_cubic import CV2Cubic
from .jpeg import BicubicJPEG
from .noise_blur import BicubicNoise, BlurDownsample


DegradeFn = Callable[[torch.Tensor, int], torch.Tensor]


def SecondOrder(scale: int = 4) -> DegradeFn:  # noqa: N802 - albumentations (the `training` extra) loads on use
    from .second_order import SecondOrder

    return SecondOrder(scale)


def FirstOrder(scale: int = 4) -> DegradeFn:  # noqa: N802
    from .first_order import FirstOrder

    return FirstOrder(scale)


def Mixture(scale: int = 4, **kwargs) -> DegradeFn:  # noqa: N802
    from .mixture import Mixture

    return Mixture(scale, **kwargs)


DEGRADATIONS: dict[str, Callable[[int], DegradeFn]] = {
    "bicubic": Bicubic,
    "jpeg": BicubicJPEG,  # bicubic, then JPEG at a random quality in [30, 95] (a web image)
    "jpeg30": partial(BicubicJPEG, quality=30),
    "jpeg40": partial(BicubicJPEG, quality=40),
    "jpeg50": partial(BicubicJPEG, quality=50),
    "jpeg70": partial(BicubicJPEG, quality=70),
    "noise15": partial(BicubicNoise, sigma=15.0),  # bicubic, then Gaussian noise of 15 levels
    "blur": partial(BlurDownsample, sigma=1.6),  # a Gaussian blur of 1.6 HR pixels, then bicubic
    "realesrgan": SecondOrder,  # Real-ESRGAN's second-order degradation, as in its training options
    "mild": FirstOrder,  # a first-order camera degradation: blur, downscale, light noise, light JPEG
    "realworld": Mixture,  # the real-world model's training mix: bicubic, jpeg, mild and realesrgan
    "realworld-heavy": partial(Mixture, weights=(0.2, 0.2, 0.0, 0.6)),  # the first mix, too heavy (see Mixture)
    # the second stage's mix: more and heavier web JPEG (quality 20-80), less of the second-order worst case
    "realworld-jpeg": partial(Mixture, weights=(0.10, 0.40, 0.30, 0.20), jpeg_qualities=(20, 80)),
    "aliased": Aliased,  # a downscale without antialiasing (nearest, bilinear or bicubic sampling), JPEG half the time
    # a third stage's mix (training/recipes/deltadiff-x4-real-stage3.args, x4-real v0.3): realworld-jpeg with aliased thumbnails added
    "realworld-aliased": partial(Mixture, weights=(0.10, 0.30, 0.25, 0.20, 0.15), jpeg_qualities=(20, 80)),
    "cv2-cubic": CV2Cubic,  # OpenCV's resize INTER_CUBIC, no antialiasing: an evaluation set (thumbnails, OpenCV's SR models)
    "camera": Camera,  # a lens's blur, the antialiased downscale, light sensor noise: a camera's own small image
    # a fourth stage's mix (training/recipes/deltadiff-x4-real-stage4.args, x4-real v0.4): realworld-aliased with camera images added
    "realworld-camera": partial(Mixture, weights=(0.10, 0.25, 0.20, 0.15, 0.10, 0.20), jpeg_qualities=(20, 80)),
}


def Degradation(kind: str = "bicubic", scale: int = 4) -> DegradeFn:  # noqa: N802 - reads like the class it was
    """
    The registered degradation `kind` at `scale`: a callable `(hr, seed) -> lr` that checks its input and seed
    ([`~contract.CheckedDegradation`]) and pickles (spawned data-loader workers).
    """
    if kind not in DEGRADATIONS:
        raise ValueError(f"Unknown degradation {kind!r}: choose one of {', '.join(DEGRADATIONS)}.")
    scale = check_scale(scale)
    return CheckedDegradation(kind, scale, DEGRADATIONS[kind](scale))


__all__ = ["DEGRADATIONS", "Degradation", "bicubic_downsample"]
