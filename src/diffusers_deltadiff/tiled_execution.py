"""
How the pipeline's work is cut into tiles: the plan of a latent canvas, UNet calls batched over tiles of one shape,
and the three bands of work the reverse chain is made of (encode the LR, one reverse step, decode), each computed
tile by tile with its context. [`DeltaDiffPipeline`] inherits this; its `_upscale_batch` runs the chain with them.
"""

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .image_utils import to_gray
from .tiling import Box, RowWindow, Tile, Wavefront, column_strips, plan_tiles, tile_rows


@dataclass
class _Batch:
    """How one batch of same-size images runs: its tiles, how they run, and what the call wants back."""

    tiles: list[Tile]
    streamed: bool  # as a wavefront of tile rows in column strips, or on whole latent canvases
    tiles_per_call: int  # tiles of this batch per UNet call: `tile_batch_size // images`
    output_type: str
    generator: torch.Generator | list[torch.Generator] | None = None
    gray: torch.Tensor | None = None  # `(B,)`: which images come out gray
    return_intermediates: bool = False
    callback: Callable | None = None
    callback_inputs: tuple[str, ...] = ()
    progress_bar: Any = None


class TiledExecution:
    """A mixin for [`DeltaDiffPipeline`]: tiles, their batches, and the encode / step / decode of a band of tiles."""

    @property
    def latent_tile_multiple(self) -> int:
        """Tile edges (latent pixels) fall on multiples of this: the UNet's downsampling grid, and whole LR pixels."""
        unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        latents_per_lr_step = self.upscale_factor // math.gcd(self.upscale_factor, self.vae_scale_factor)
        return math.lcm(unet_factor, latents_per_lr_step)

    def _latent_canvas_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The latent canvas of LR images of `size`: padded to `lr_size_multiple` (as `pad_to_multiple` does), scaled."""
        multiple, scale, f = self.lr_size_multiple, self.upscale_factor, self.vae_scale_factor
        return tuple(-(-n // multiple) * multiple * scale // f for n in size)

    def unet_pixels(self, size: tuple[int, int], tile_size: int | None = None, tile_overlap: int | None = None) -> int:
        """
        The latent pixels one reverse step feeds the UNet for an LR image of `size` `(height, width)`: the canvas
        after border and size padding, every tile with its context. The cost of an image in work, not in its own
        pixels: a 1 x 30000 strip costs far more than its 30000 pixels (services bound requests by this).
        """
        pad = self.config.border_padding
        latent_size = self._latent_canvas_size((size[0] + 2 * pad, size[1] + 2 * pad))
        context = self.config.tile_context if tile_overlap is None else tile_overlap
        tiles = self._plan(latent_size, tile_size, context)
        return sum(tile.outer.shape[0] * tile.outer.shape[1] for tile in tiles)

    def _plan(self, latent_size: tuple[int, int], tile_size: int | None, context: int) -> list[Tile]:
        """The tiles of a latent canvas: one (the whole canvas) unless the image is tiled."""
        height, width = latent_size
        if tile_size is None:
            # decided on the image's own size: the border padding alone never adds a tile (or switches tiling on)
            border = self.config.border_padding * self.upscale_factor // self.vae_scale_factor
            own_size = max(latent_size) - 2 * border
            tile_size = 0
            if own_size > self.config.auto_tile_threshold:
                tile_size, count = self.config.default_tile_size, math.ceil(own_size / self.config.default_tile_size)
                if count * tile_size < max(latent_size):  # the padding would add a sliver of tiles: widen them
                    multiple = self.latent_tile_multiple
                    tile_size = math.ceil(max(latent_size) / count / multiple) * multiple
        if not tile_size or tile_size >= max(latent_size):
            return plan_tiles(height, width, max(height, width), 0)
        return plan_tiles(height, width, tile_size, context, self.latent_tile_multiple)

    def _map_tiles(self, tiles: list[Tile], batch_size: int, function, write, progress_bar=None):
        """
        Call `function(outer_box)` on batches of at most `batch_size` tiles of one shape (their outer boxes
        concatenated along the batch), then `write(tile, result)` with each tile's share of the result.
        """
        by_shape: dict[tuple[int, int], list[Tile]] = {}
        for tile in tiles:
            by_shape.setdefault(tile.outer.shape, []).append(tile)
        for group in by_shape.values():
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                results = function([tile.outer for tile in batch]).chunk(len(batch))
                for tile, result in zip(batch, results):
                    write(tile, result)
                if progress_bar is not None:
                    progress_bar.update()

    def _encode_band(self, lr: torch.Tensor, tiles: list[Tile], region: Box, batch: _Batch):
        """
        `(y, condition)` of [`encode_lr`] for padded LR images on the `region` of the latent canvas that `tiles`
        cover, computed tile by tile.
        """
        f, s = self.vae_scale_factor, self.upscale_factor
        lr_latents = lr_condition = None

        def encode(boxes):
            return torch.cat([torch.cat(self.encode_lr(box.scaled(f, s).crop(lr)), dim=1) for box in boxes])

        def write(tile, result):
            nonlocal lr_latents, lr_condition
            if lr_latents is None:
                channels = result.shape[1] - 3
                lr_latents = lr.new_empty(lr.shape[0], channels, *region.shape, dtype=self.unet.dtype)
                lr_condition = lr.new_empty(lr.shape[0], 3, *region.shape, dtype=self.unet.dtype)
            inner = tile.inner.within(tile.outer).crop(result)
            tile.inner.shifted(region.top, region.left).crop(lr_latents).copy_(inner[:, :-3])
            tile.inner.shifted(region.top, region.left).crop(lr_condition).copy_(inner[:, -3:])

        self._map_tiles(tiles, batch.tiles_per_call, encode, write)
        return lr_latents, lr_condition

    def _denoise_band(self, wave: Wavefront, step: int, t: int, row: int, batch: _Batch) -> torch.Tensor:
        """
        Reverse step `step` (eq. 5/6, timestep `t`) of tile row `row` of `wave`: the UNet's prediction tile by tile,
        each tile seen with its context. Tiles of a deterministic chain step as soon as they are predicted (the step
        is elementwise), so that no full-size model output is kept; a noisy chain (kappa > 0), or a single tile,
        steps the whole band at once, so that the noise does not depend on the tiling.
        """
        latents, lr_latents, condition = wave.x[step - 1], wave.y, wave.condition
        tiles, region = wave.rows[row], wave.bands[row]
        per_tile = batch.streamed or (len(tiles) > 1 and self._scheduler.config.kappa == 0)
        target = None

        def predict(boxes):
            sample = torch.cat([latents.crop(box) for box in boxes])
            lr_condition = torch.cat([condition.crop(box) for box in boxes])
            model_input = torch.cat([self._scheduler.scale_model_input(sample, t), lr_condition], dim=1)
            timestep = torch.full((model_input.shape[0],), t, device=sample.device, dtype=torch.long)
            return self.unet(model_input, timestep).sample

        def write(tile, result):
            nonlocal target
            output = tile.inner.within(tile.outer).crop(result)
            if per_tile:
                sample, lr_sample = latents.crop(tile.inner), lr_latents.crop(tile.inner)
                output = self._scheduler.step(output, t, sample, lr_sample=lr_sample).prev_sample
            if target is None:
                target = output.new_empty(*output.shape[:2], *region.shape)
            tile.inner.shifted(region.top, region.left).crop(target).copy_(output)

        self._map_tiles(tiles, batch.tiles_per_call, predict, write, batch.progress_bar)
        if per_tile:
            return target
        sample, lr_sample = latents.crop(region), lr_latents.crop(region)
        return self._scheduler.step(target, t, sample, generator=batch.generator, lr_sample=lr_sample).prev_sample

    def _decode_band(self, canvas, latents: RowWindow, tiles: list[Tile], batch: _Batch, columns=None):
        """
        Decode the latents `tiles` cover (held by `latents`) tile by tile into `canvas` ([`~canvas.Canvas`]),
        cropped to its size and to the latent `columns` (a `(left, right)` span; all by default).
        """
        f = self.vae_scale_factor
        left, right = (columns[0] * f, columns[1] * f) if columns else (0, canvas.width)
        owned = Box(0, canvas.height, left, min(right, canvas.width))

        def decode(boxes):
            return torch.cat([self.decode_latents(latents.crop(box)) for box in boxes])

        def write(tile, result):
            box = tile.inner.scaled(f).clipped(owned)
            if box.bottom <= box.top or box.right <= box.left:
                return
            image = self.image_processor.denormalize(box.within(tile.outer.scaled(f)).crop(result).float().cpu())
            if batch.gray is not None and batch.gray.any():
                image[batch.gray] = to_gray(image[batch.gray])
            canvas.paste(box, image)

        self._map_tiles(tiles, batch.tiles_per_call, decode, write)
        return canvas

    def _streams(self, tiles: list[Tile], output_type: str, needs_steps: bool) -> bool:
        """Whether a canvas cut into `tiles` runs as a wavefront ([`~tiling.Wavefront`]): a deterministic chain in
        several tile rows, when no caller needs every step's latents (callbacks, intermediates, latent output)."""
        deterministic = self._scheduler.config.kappa == 0
        wanted = self.config.stream_tiles and not needs_steps and output_type != "latent"
        return deterministic and wanted and len(tile_rows(tiles)) > 1

    def _strips(self, tiles: list[Tile]):
        """
        The column strips a streamed canvas runs in ([`column_strips`]): at most `stream_width` latent pixels wide,
        with a halo of neighbouring tile columns as wide as the error at a cut edge spreads over the chain (the tile
        context at every step, encoding and decoding). A strip writes only its own columns: every output pixel sees
        what it sees on the whole canvas.
        """
        context = max(max(t.inner.left - t.outer.left, t.outer.right - t.inner.right) for t in tiles)
        halo = (len(self._scheduler.timesteps) + 2) * context
        return column_strips(tiles, self.config.stream_width, halo)

    def _unet_calls(self, tiles: list[Tile], streamed: bool, batch_size: int) -> int:
        """UNet calls per reverse step ([`_map_tiles`] batches tiles of one shape; streamed, within a tile row of a
        strip, halo tiles included)."""

        def calls(group):
            return sum(math.ceil(n / batch_size) for n in Counter(t.outer.shape for t in group).values())

        if not streamed:
            return calls(tiles)
        return sum(calls(row) for _, _, strip in self._strips(tiles) for row in tile_rows(strip))
