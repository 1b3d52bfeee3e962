"""
Real-ESRGAN's second-order degradation (Wang et al. 2021, section 3; the options of its `train_realesrgan_x4plus`),
built from albumentations transforms, seeded per sample:

1. blur: a 7-21 pixel kernel, sinc (10 %) or one of isotropic / anisotropic Gaussian, generalised Gaussian and
   plateau (45 / 25 / 15 / 15 % of the rest), sigma in [0.2, 3];
2. resize relative to the HR size: up to 1.5x (20 %), down to 0.15x (70 %) or kept (10 %), with area, bilinear or
   bicubic interpolation;
3. noise: Gaussian (sigma 1-30 levels) or Poisson (scale 0.05-3), each grey (the same in every channel) 40 % of
   the time;
4. JPEG at quality 30-95;
5. again, weaker: blur 80 % of the time with sigma in [0.2, 1.5], resize to 0.3x-1.2x *of the LR size* (30 / 40 /
   30 %), noise sigma 1-25 or Poisson 0.05-2.5;
6. last, in a random order: [resize to the LR size, sinc 80 % of the time] and JPEG at quality 30-95.
"""

import math

import albumentations as A
import cv2
import numpy as np

from .seeded_pipeline import SeededPipeline


INTERPOLATIONS = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, angle: float, beta: float) -> np.ndarray:
    """The plateau-shaped kernel `1 / (1 + (x^T S^-1 x)^beta)` (Real-ESRGAN eq. 3), normalised, `size` x `size`."""
    axis = np.arange(size, dtype=np.float64) - size // 2
    grid = np.stack(np.meshgrid(axis, axis), axis=-1)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    distance = np.einsum("...i,ij,...j->...", grid, np.linalg.inv(covariance), grid)
    kernel = 1.0 / (1.0 + distance**beta)
    return (kernel / kernel.sum()).astype(np.float32)


class PlateauBlur(A.ImageOnlyTransform):
    """A plateau-kernel blur (isotropic or anisotropic), the family albumentations does not have."""

    def __init__(self, blur_limit=(7, 21), sigma_limit=(0.2, 3.0), beta_limit=(1.0, 2.0), isotropic=False, p=1.0):
        super().__init__(p=p)
        self.blur_limit, self.sigma_limit, self.beta_limit, self.isotropic = (
            blur_limit,
            sigma_limit,
            beta_limit,
            isotropic,
        )

    def get_params(self):
        size = self.py_random.randrange(self.blur_limit[0], self.blur_limit[1] + 1, 2)
        sigma_x = self.py_random.uniform(*self.sigma_limit)
        sigma_y = sigma_x if self.isotropic else self.py_random.uniform(*self.sigma_limit)
        angle = 0.0 if self.isotropic else self.py_random.uniform(-math.pi, math.pi)
        beta = self.py_random.uniform(*self.beta_limit)
        return {"kernel": plateau_kernel(size, sigma_x, sigma_y, angle, beta)}

    def apply(self, img, kernel=None, **params):
        return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


class RandomResize(A.ImageOnlyTransform):
    """
    Resize by a factor drawn as Real-ESRGAN does: up in `(1, high)`, down in `(low, 1)` or kept, with probabilities
    `probs`, with area, bilinear or bicubic interpolation. The factor applies to `base` (a fixed `(h, w)`), else to
    the image's own size.
    """

    def __init__(self, probs=(0.2, 0.7, 0.1), factor_range=(0.15, 1.5), base=None, p=1.0):
        super().__init__(p=p)
        self.probs, self.factor_range, self.base = probs, factor_range, base

    def get_params(self):
        direction = self.py_random.choices(("up", "down", "keep"), weights=self.probs)[0]
        low, high = self.factor_range
        factor = {"up": self.py_random.uniform(1, high), "down": self.py_random.uniform(low, 1), "keep": 1.0}[
            direction
        ]
        return {"factor": factor, "interpolation": self.py_random.choice(INTERPOLATIONS)}

    def apply(self, img, factor=1.0, interpolation=cv2.INTER_LINEAR, **params):
        height, width = self.base or img.shape[:2]
        size = (max(int(width * factor), 1), max(int(height * factor), 1))
        return np.clip(cv2.resize(img, size, interpolation=interpolation), 0, 1)


class ResizeTo(A.ImageOnlyTransform):
    """Resize to a fixed `(h, w)` with area, bilinear or bicubic interpolation, drawn at random."""

    def __init__(self, size, p=1.0):
        super().__init__(p=p)
        self.size = size

    def get_params(self):
        return {"interpolation": self.py_random.choice(INTERPOLATIONS)}

    def apply(self, img, interpolation=cv2.INTER_LINEAR, **params):
        return np.clip(cv2.resize(img, (self.size[1], self.size[0]), interpolation=interpolation), 0, 1)


class PoissonNoise(A.ImageOnlyTransform):
    """
    Real-ESRGAN's Poisson noise: `(Poisson(256 x) / 256 - x) * scale`, in colour or grey (the noise of the luma in
    every channel) with probability `gray_prob`.
    """

    def __init__(self, scale_range=(0.05, 3.0), gray_prob=0.4, p=1.0):
        super().__init__(p=p)
        self.scale_range, self.gray_prob = scale_range, gray_prob

    def get_params(self):
        return {"scale": self.py_random.uniform(*self.scale_range), "gray": self.py_random.random() < self.gray_prob}

    def apply(self, img, scale=1.0, gray=False, **params):
        levels = 256.0
        source = img.mean(axis=2, keepdims=True) if gray else img
        source = np.clip(source, 0, 1)
        noise = self.random_generator.poisson(source * levels) / levels - source
        return np.clip(img + (noise * scale).astype(np.float32), 0, 1)


def blur(sigma, p: float = 1.0, sinc_prob: float = 0.1):
    """One blur of Real-ESRGAN's kernel families (generalised isotropic Gaussians drawn as anisotropic ones)."""
    gaussian = 1 - sinc_prob
    return A.OneOf(
        [
            A.RingingOvershoot(blur_limit=(7, 21), cutoff=(math.pi / 5, math.pi), p=sinc_prob),
            A.GaussianBlur(blur_limit=(7, 21), sigma_limit=sigma, p=gaussian * 0.45),
            A.AdvancedBlur((7, 21), sigma, sigma, beta_limit=(0.999, 1.001), noise_limit=(1, 1), p=gaussian * 0.25),
            A.AdvancedBlur((7, 21), sigma, sigma, beta_limit=(0.5, 4.0), noise_limit=(1, 1), p=gaussian * 0.15),
            PlateauBlur(sigma_limit=sigma, isotropic=True, p=gaussian * 0.12),
            PlateauBlur(sigma_limit=sigma, isotropic=False, p=gaussian * 0.03),
        ],
        p=p,
    )


def noise(gaussian_sigma, poisson_scale, gray_prob: float = 0.4):
    """Gaussian or Poisson noise, half and half, each grey `gray_prob` of the time."""
    sigma = (gaussian_sigma[0] / 255, gaussian_sigma[1] / 255)
    return A.OneOf(
        [
            A.GaussNoise(std_range=sigma, per_channel=True, p=0.5 * (1 - gray_prob)),
            A.GaussNoise(std_range=sigma, per_channel=False, p=0.5 * gray_prob),
            PoissonNoise(scale_range=poisson_scale, gray_prob=gray_prob, p=0.5),
        ],
        p=1.0,
    )


def jpeg():
    return A.ImageCompression(quality_range=(30, 95), p=1.0)


def second_order_pipeline(height: int, width: int, scale: int) -> A.Compose:
    """The whole degradation of an HR image of `height` x `width` to its LR size, as one albumentations Compose."""
    lr_size = (height // scale, width // scale)
    first = [blur((0.2, 3.0)), RandomResize((0.2, 0.7, 0.1), (0.15, 1.5)), noise((1, 30), (0.05, 3.0)), jpeg()]
    second = [
        blur((0.2, 1.5), p=0.8),
        RandomResize((0.3, 0.4, 0.3), (0.3, 1.2), base=lr_size),
        noise((1, 25), (0.05, 2.5)),
        jpeg(),
    ]
    resize_sinc = [ResizeTo(lr_size), A.RingingOvershoot(blur_limit=(7, 21), cutoff=(math.pi / 5, math.pi), p=0.8)]
    last = A.OneOf(
        [A.Sequential([*resize_sinc, jpeg()], p=0.5), A.Sequential([jpeg(), *resize_sinc], p=0.5)],
        p=1.0,
    )
    return A.Compose([*first, *second, last], strict=False)


class SecondOrder(SeededPipeline):
    """`(hr, seed) -> lr`: [`second_order_pipeline`] at `scale`, 8-bit output."""

    build = staticmethod(second_order_pipeline)
