"""
The chain's first stage: the low-resolution images as the chain sees them, in the latent space of the autoencoder.
The pipeline encodes tile by tile with [`encode_lr`] and the trainer encodes its crops with it, so the `y` a model is
trained on is the `y` it is run on.
"""

import math

import torch
import torch.nn.functional as F

from .image_utils import bicubic_upsample, resize_to


def autoencoder_downsampling_factor(autoencoder) -> int:
    """How many image pixels one latent pixel spans: `downsampling_factor`, or `2^(blocks - 1)` for a `VQModel`."""
    factor = getattr(autoencoder.config, "downsampling_factor", None)
    return int(factor) if factor else 2 ** (len(autoencoder.config.block_out_channels) - 1)


def encode_lr(autoencoder, lr: torch.Tensor, upscale_factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The two views of LR images `(B, 3, h, w)` in `[-1, 1]` that the chain needs: the latent `y` of their bicubic
    upsampling, and the LR images resized to the latent size (the UNet's extra input channels).
    """
    upsampled = bicubic_upsample(lr, upscale_factor)
    lr_latents = autoencoder.encode(upsampled.to(autoencoder.dtype)).latents
    lr_condition = resize_to(lr, tuple(lr_latents.shape[-2:]))
    return lr_latents, lr_condition


def cubic_convolution_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights (`a = -0.75`, torch's bicubic) of the 4 taps around a point `t` in `[0, 1)`
    past the second one."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_phase_taps(scale: int) -> list[list[float]]:
    """
    `scale` rows of 5: output pixel `scale * i + p` of a bicubic upsampling by `scale` (`align_corners=False`) is
    `sum_k taps[p][k] * input[i + k - 2]`, the input's edge pixels repeated beyond it (torch clamps the taps there).
    """
    taps = [[0.0] * 5 for _ in range(scale)]
    for phase in range(scale):
        source = (phase + 0.5) / scale - 0.5  # where the output pixel falls in input pixels, relative to i
        first = math.floor(source)
        for k, weight in enumerate(cubic_convolution_weights(source - first)):
            taps[phase][first + 1 + k] = weight
    return taps


def bicubic_space_to_depth(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """
    `pixel_unshuffle(bicubic_upsample(lr, scale), scale)` computed at LR size: each of the `scale^2` phases of the
    upsampling is a 5x5 filter of the edge-padded LR (a grouped convolution), so the `scale^2`-times larger image is
    never made. Equal to the two steps within float error; the latent `y` of a space-to-depth autoencoder of block
    size `scale` (in ONNX Runtime, its bicubic resize costs a fifth of the UNet; this, milliseconds).
    """
    if scale == 1:
        return lr
    taps = bicubic_phase_taps(scale)
    # channel c's phase (p_y, p_x) is output channel (c * scale + p_y) * scale + p_x, as `pixel_unshuffle` orders them
    phases = [[[[ty * tx for tx in taps[px]] for ty in taps[py]]] for py in range(scale) for px in range(scale)]
    kernel = torch.tensor(phases * int(lr.shape[1]), dtype=lr.dtype, device=lr.device)  # a constant when traced
    return F.conv2d(replicate_pad(lr, 2), kernel, groups=lr.shape[1]).clamp(-1.0, 1.0)


def replicate_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
    """`F.pad(images, (pad,) * 4, mode="replicate")` of `(B, C, H, W)`, written with slices so that an ONNX trace
    keeps the tensor's rank (the exporter's `Pad` loses it, and a convolution after it cannot be exported)."""
    rows = torch.cat([images[..., :1, :].repeat(1, 1, pad, 1), images, images[..., -1:, :].repeat(1, 1, pad, 1)], -2)
    return torch.cat([rows[..., :1].repeat(1, 1, 1, pad), rows, rows[..., -1:].repeat(1, 1, 1, pad)], -1)
