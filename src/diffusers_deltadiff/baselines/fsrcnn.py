"""
FSRCNN (Dong et al., 2016), the classic light SR network, as a baseline: about 12K parameters at d = 56, s = 12,
m = 4, working on the LR image and upscaling with a transposed convolution at the end. Here it predicts RGB, and the
residual over the bicubic upscale (which it starts from when its last layer is zero), so it is trained
(`training/train_fsrcnn.py`) and scored exactly like the DeltaDiff models.

A trained FSRCNN is a folder with `fsrcnn.safetensors` and `config.json` (`{"scale": ...}`).
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..image_utils import to_gray


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


def load_fsrcnn(folder: str | Path) -> FSRCNN:
    """The FSRCNN saved in `folder` (`fsrcnn.safetensors` + `config.json`), in eval mode."""
    config = json.loads((Path(folder) / "config.json").read_text())
    model = FSRCNN(scale=config["scale"])
    model.load_state_dict(load_file(str(Path(folder) / "fsrcnn.safetensors")))
    return model.eval()


class FSRCNNUpscaler:
    """A trained [`FSRCNN`] as an upscaler: clamped to `[0, 1]`, gray in, gray out (as the pipeline), deterministic."""

    stochastic = False

    def __init__(self, model: FSRCNN):
        self.model = model

    @torch.no_grad()
    def __call__(self, lr: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        sr = self.model(lr[None]).clamp(0, 1)
        if torch.equal(lr[0], lr[1]) and torch.equal(lr[1], lr[2]):
            sr = to_gray(sr)
        return sr[0]


def load_fsrcnn_upscaler(folder: str | None, scale: int) -> FSRCNNUpscaler:
    """The registry's loader: the FSRCNN of `folder`, which must have been trained at `scale`."""
    if folder is None:
        raise ValueError("the fsrcnn baseline needs the folder of a trained FSRCNN (fsrcnn:FOLDER)")
    model = load_fsrcnn(folder)
    if model.scale != scale:
        raise ValueError(f"{folder}: an x{model.scale} FSRCNN, asked for x{scale}")
    return FSRCNNUpscaler(model)
