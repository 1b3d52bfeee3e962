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
"""A `UNet2DModel` whose layers see only local context: per-pixel normalisation, no attention.

Saved pipelines name this module in `model_index.json`: never rename it.

`GroupNorm` normalises with statistics over the whole feature map, so a model trained on crops depends on the crop
size, and an image cut into tiles comes out with a different tone in every tile. Here every `GroupNorm` of
`UNet2DModel` is replaced by [`PixelNorm`], which normalises each pixel over its channels (the channels-first
`LayerNorm` of ConvNeXt). The output at a pixel then depends only on the input around it, the receptive field of the
convolutions: the model gives the same result on a crop as on the whole image, away from the crop's border.
"""

import functools

import torch
import torch.nn.functional as F
from diffusers.models import UNet2DModel
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401 - pipelines find a component's loader here
from torch import nn


class PixelNorm(nn.Module):
    """
    Normalises every pixel of `(B, C, H, W)` over its `C` channels, then scales and shifts per channel. Parameters are
    named as `nn.GroupNorm`'s (`weight`, `bias`, shape `(C,)`).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # `layer_norm` over the last dimension of the channels-last view: one fused kernel
        normed = F.layer_norm(x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps)
        return normed.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


def replace_group_norms(module: nn.Module) -> nn.Module:
    """Swap every `nn.GroupNorm` inside `module` for a [`PixelNorm`] with the same channels and `eps`."""
    for name, child in module.named_children():
        if isinstance(child, nn.GroupNorm):
            setattr(module, name, PixelNorm(child.num_channels, child.eps, child.affine))
        else:
            replace_group_norms(child)
    return module


class LocalUNet2DModel(UNet2DModel):
    r"""
    [`~diffusers.UNet2DModel`] with [`PixelNorm`] instead of `GroupNorm` and without attention, so that every output
    pixel depends only on a neighbourhood of the input. It takes `UNet2DModel`'s arguments (`norm_num_groups` is
    unused, but must still divide the channels, as `UNet2DModel` checks it) and its state dict has the same keys and shapes.

    Attention looks at the whole image, so attention blocks and the mid-block's attention are refused: pass
    `add_attention=False` and `DownBlock2D` / `UpBlock2D` blocks.
    """

    @functools.wraps(UNet2DModel.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        blocks = [*self.config.down_block_types, *self.config.up_block_types]
        if self.config.add_attention or any("Attn" in block for block in blocks):
            raise ValueError(
                "`LocalUNet2DModel` has no attention (it sees the whole image): pass `add_attention=False` and "
                f"blocks without attention, got add_attention={self.config.add_attention} and blocks {blocks}."
            )
        replace_group_norms(self)
