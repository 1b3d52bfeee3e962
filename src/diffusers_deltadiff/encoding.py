"""
The chain's first stage: the low-resolution images as the chain sees them, in the latent space of the autoencoder.
The pipeline encodes tile by tile with [`encode_lr`] and the trainer encodes its crops with it, so the `y` a model is
trained on is the `y` it is run on.
"""

import torch

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
