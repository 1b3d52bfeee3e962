"""Tiny, seeded DeltaDiff components for tests, examples and smoke runs (random weights, no download)."""

import torch
from diffusers.models import UNet2DModel, VQModel

from .autoencoder_space_to_depth import SpaceToDepthAutoencoder
from .pipeline_deltadiff import DeltaDiffPipeline
from .scheduling_delta_shift import DeltaShiftScheduler
from .unet_local_norm import LocalUNet2DModel


def tiny_vqmodel(seed: int = 0) -> VQModel:
    """A random f4 `VQModel` with 3 latent channels (three blocks: two downsamplings)."""
    torch.manual_seed(seed)
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=3,
        norm_num_groups=8,
        num_vq_embeddings=32,
        vq_embed_dim=3,
        sample_size=32,
    )


def recipe_vqmodel(seed: int = 0) -> VQModel:
    """A random VQModel of the CPU recipe's (and the shipped default model's) size: f4, 32/64/64, 1024 codes."""
    torch.manual_seed(seed)
    return VQModel(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=3,
        num_vq_embeddings=1024,
        vq_embed_dim=3,
    )


def recipe_pipeline(seed: int = 0) -> DeltaDiffPipeline:
    """A random `DeltaDiffPipeline` of the shipped default model's size (UNet 64/128/128, 4.44M parameters)."""
    torch.manual_seed(seed)
    unet = UNet2DModel(
        in_channels=6,
        out_channels=3,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    )
    return DeltaDiffPipeline(vqvae=recipe_vqmodel(seed), unet=unet, scheduler=DeltaShiftScheduler())


def _tiny_unet(cls, seed: int, latent_channels: int, channels: tuple, down: tuple, up: tuple, **kwargs):
    torch.manual_seed(seed)
    return cls(
        sample_size=8,
        in_channels=latent_channels + 3,
        out_channels=latent_channels,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=8,
        **kwargs,
    )


def tiny_unet(seed: int = 0, latent_channels: int = 3) -> UNet2DModel:
    """A random `UNet2DModel` taking the latent plus the RGB LR image and predicting the latent."""
    blocks = {"down": ("DownBlock2D", "AttnDownBlock2D"), "up": ("AttnUpBlock2D", "UpBlock2D")}
    return _tiny_unet(UNet2DModel, seed, latent_channels, (32, 64), **blocks)


def tiny_pipeline(seed: int = 0, **scheduler_kwargs) -> DeltaDiffPipeline:
    """A tiny random-weight x4 `DeltaDiffPipeline` (DeltaDiff by default, pass `kappa=2.0` for ResShift)."""
    return DeltaDiffPipeline(
        vqvae=tiny_vqmodel(seed), unet=tiny_unet(seed), scheduler=DeltaShiftScheduler(**scheduler_kwargs)
    )


def tiny_local_unet(seed: int = 0, latent_channels: int = 48, zero_output: bool = False) -> LocalUNet2DModel:
    """A random `LocalUNet2DModel` (per-pixel norms, no attention); `zero_output` zeroes its last convolution."""
    blocks = {"down": ("DownBlock2D", "DownBlock2D"), "up": ("UpBlock2D", "UpBlock2D")}
    unet = _tiny_unet(LocalUNet2DModel, seed, latent_channels, (16, 32), **blocks, add_attention=False)
    if zero_output:
        torch.nn.init.zeros_(unet.conv_out.weight)
        torch.nn.init.zeros_(unet.conv_out.bias)
    return unet


def tiny_lossless_pipeline(
    seed: int = 0, zero_output: bool = False, scale: int = 4, **scheduler_kwargs
) -> DeltaDiffPipeline:
    """
    A tiny `DeltaDiffPipeline` (x4, or x`scale`) of the shipped default's kind: lossless space-to-depth latent, a
    local-norm UNet predicting the residual (`prediction_type="residual"` unless given), with a tile context (32) that
    covers the tiny UNet's receptive field, as the shipped model's covers its own.
    """
    scheduler_kwargs.setdefault("prediction_type", "residual")
    return DeltaDiffPipeline(
        vqvae=SpaceToDepthAutoencoder(downsampling_factor=scale),
        unet=tiny_local_unet(seed, latent_channels=3 * scale * scale, zero_output=zero_output),
        scheduler=DeltaShiftScheduler(**scheduler_kwargs),
        tile_context=32,
    )
