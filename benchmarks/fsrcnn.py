"""
FSRCNN (Dong et al., 2016), the classic light SR network users know, as the baseline of the benchmarks: ~12K
parameters at d = 56, s = 12, m = 4, working on the LR image and upscaling with a transposed convolution at the end.
Here it predicts RGB, and the residual over the bicubic upscale (which it starts from when its last layer is zero),
so it is trained and scored exactly like the DeltaDiff models. Not part of the package.
"""

import torch
import torch.nn.functional as F
from torch import nn


class FSRCNN(nn.Module):
    def __init__(self, scale: int = 4, d: int = 56, s: int = 12, m: int = 4, channels: int = 3):
        super().__init__()
        self.scale = scale
        layers = [nn.Conv2d(channels, d, 5, padding=2), nn.PReLU(d), nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(d, channels, 9, stride=scale, padding=4, output_padding=scale - 1)
        nn.init.zeros_(self.deconv.weight)
        nn.init.zeros_(self.deconv.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """LR `(B, 3, h, w)` in `[0, 1]` to SR `(B, 3, h * scale, w * scale)`: bicubic plus the predicted residual."""
        bicubic = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return bicubic + self.deconv(self.body(lr))


def macs_per_output_pixel(model, lr: torch.Tensor, output_pixels: int) -> float:
    """Multiply-accumulates per output pixel of `model(lr)`, counted by torch's FLOP counter (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(lr)
    return counter.get_total_flops() / 2 / output_pixels
