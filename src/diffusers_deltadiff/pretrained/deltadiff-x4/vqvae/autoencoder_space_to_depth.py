# Copyright 2026 The diffusers-deltadiff authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""A lossless, parameter-free latent: space-to-depth (`pixel_unshuffle`) with the `VQModel` interface.

Saved pipelines name this module in `model_index.json`: never rename it.

An f`r` space-to-depth latent packs every `r x r` block of pixels into `3 r^2` channels, so an x4 LR image already has
the latent's spatial size (as with LDM's VQ-f4) and decoding is the exact inverse: the round trip is the identity,
it costs nothing to encode or decode, and no learned autoencoder caps the fidelity of the diffusion model on top.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput


@dataclass
class SpaceToDepthEncoderOutput(BaseOutput):
    """
    Args:
        latents (`torch.Tensor` of shape `(batch_size, latent_channels, height / r, width / r)`):
            The packed image.
    """

    latents: torch.Tensor


@dataclass
class SpaceToDepthDecoderOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, in_channels, height, width)`):
            The unpacked image.
    """

    sample: torch.Tensor


class SpaceToDepthAutoencoder(ModelMixin, ConfigMixin):
    r"""
    A parameter-free autoencoder whose latent is the image rearranged by `torch.nn.functional.pixel_unshuffle`.

    It has the interface of [`~diffusers.VQModel`] that [`DeltaDiffPipeline`] and the training scripts use
    (`encode(x).latents`, `decode(z).sample`, `config.latent_channels`), and saves and loads like any diffusers model
    (a `config.json` and a weights file holding one zero).

    Parameters:
        in_channels (`int`, *optional*, defaults to 3): Channels of the image.
        downsampling_factor (`int`, *optional*, defaults to 4): The block size `r`; the latent is `r` times smaller.
        latent_channels (`int`, *optional*): `in_channels * r^2` (48 for RGB f4); the only value accepted.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, downsampling_factor: int = 4, latent_channels: int | None = None):
        super().__init__()
        if downsampling_factor < 1:
            raise ValueError(f"`downsampling_factor` must be at least 1, got {downsampling_factor}.")
        packed = in_channels * downsampling_factor**2
        if latent_channels is not None and latent_channels != packed:
            raise ValueError(
                f"`latent_channels` of a space-to-depth latent is in_channels * downsampling_factor^2 = {packed}, "
                f"got {latent_channels}."
            )
        self.register_to_config(latent_channels=packed)
        # There are no weights. This one-element buffer carries the model's device and dtype (as `.to()` sets them)
        # and gives `save_pretrained` a (68-byte) weights file, which `from_pretrained` expects.
        self.register_buffer("dtype_anchor", torch.zeros(()))

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> SpaceToDepthEncoderOutput | tuple:
        """Pack images `(B, C, H, W)`, `H` and `W` multiples of `downsampling_factor`, into latents."""
        factor = self.config.downsampling_factor
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"Image size {tuple(x.shape[-2:])} is not a multiple of the block size {factor}.")
        latents = F.pixel_unshuffle(x, factor)
        if not return_dict:
            return (latents,)
        return SpaceToDepthEncoderOutput(latents=latents)

    def decode(self, z: torch.Tensor, return_dict: bool = True, **kwargs) -> SpaceToDepthDecoderOutput | tuple:
        """Unpack latents into images; `VQModel.decode`'s keyword arguments (`force_not_quantize`) are accepted."""
        sample = F.pixel_shuffle(z, self.config.downsampling_factor)
        if not return_dict:
            return (sample,)
        return SpaceToDepthDecoderOutput(sample=sample)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> SpaceToDepthDecoderOutput | tuple:
        """The round trip `decode(encode(sample))`: the identity."""
        return self.decode(self.encode(sample).latents, return_dict=return_dict)
