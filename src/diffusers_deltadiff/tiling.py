"""Overlapping tiles and their blending weights, for upscaling images of any size in bounded memory."""

import torch


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """
    Start offsets of tiles of size `min(tile, length)` covering `[0, length)`, consecutive tiles overlapping by at
    least `overlap`; starts are multiples of `align` except that the last tile ends exactly at `length`.
    """
    tile = min(tile, length)
    if tile == length:
        return [0]
    stride = max(tile - overlap, 1) // align * align or align
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def ramp(length: int, ramp_in: int, ramp_out: int) -> torch.Tensor:
    """1-D weights rising linearly over the first `ramp_in` samples and falling over the last `ramp_out` (> 0)."""
    weights = torch.ones(length, dtype=torch.float32)
    position = torch.arange(length, dtype=torch.float32)
    if ramp_in > 0:
        weights = torch.minimum(weights, (position + 1) / (ramp_in + 1))
    if ramp_out > 0:
        weights = torch.minimum(weights, (length - position) / (ramp_out + 1))
    return weights


def tile_weights(height: int, width: int, overlap: int, top: bool, bottom: bool, left: bool, right: bool):
    """
    Linear-ramp blending weights `(1, height, width)` of one tile: they ramp over `overlap` pixels on the sides that
    meet a neighbouring tile (`top`, `bottom`, ...) and stay 1 at the image border, so weights summed over all tiles
    are positive everywhere and the blend is seamless.
    """
    rows = ramp(height, overlap if top else 0, overlap if bottom else 0)
    cols = ramp(width, overlap if left else 0, overlap if right else 0)
    return (rows[:, None] * cols[None, :])[None]


class TileBlender:
    """Accumulates weighted tiles on a canvas and returns their blend."""

    def __init__(self, channels: int, height: int, width: int):
        self.canvas = torch.zeros(channels, height, width, dtype=torch.float32)
        self.weight = torch.zeros(1, height, width, dtype=torch.float32)

    def add(self, tile: torch.Tensor, top: int, left: int, weights: torch.Tensor):
        height, width = tile.shape[-2:]
        self.canvas[:, top : top + height, left : left + width] += tile.float().cpu() * weights
        self.weight[:, top : top + height, left : left + width] += weights

    def result(self) -> torch.Tensor:
        return self.canvas / self.weight.clamp_min(1e-8)
