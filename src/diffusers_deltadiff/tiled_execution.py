"""
How one pipeline call runs tile by tile. [`DeltaDiffPipeline`] builds a [`TiledExecutor`] for every call, from its
config and the call's `tile_size`, `tile_context` and `tile_batch_size`, and its reverse loop asks it for the work of
each stage in order: the tiles to encode, the UNet batches of a reverse step, the tiles to decode, each with the part
of the canvas it sees. The executor keeps what the loop computes (on whole latent canvases, or in a
[`~tiling.Wavefront`] down column strips) and pastes the decoded tiles into the output; the models and the scheduler
are called in the loop only.
"""

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import deprecate

from .canvas import CANVASES
from .image_utils import to_gray
from .tiling import Box, RowWindow, Tile, Wavefront, column_strips, plan_tiles, tile_rows


def deprecated_tile_overlap(tile_context: int | None, kwargs: dict, caller: str, stacklevel: int = 4) -> int | None:
    """
    `tile_context`, or the value of `tile_overlap` in `kwargs`: its deprecated spelling (a `FutureWarning` pointing
    `stacklevel` frames up, at the caller's caller). Any other keyword in `kwargs` is a `TypeError` naming `caller`.
    """
    unknown = sorted(set(kwargs) - {"tile_overlap"})
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    if "tile_overlap" not in kwargs:
        return tile_context
    if tile_context is not None:
        raise ValueError("Pass `tile_context` only: `tile_overlap` is its deprecated spelling.")
    message = "Pass `tile_context` instead: the same latent pixels of context around each tile."
    return deprecate("tile_overlap", "1.0.0", message, take_from=kwargs, stacklevel=stacklevel)


@dataclass(frozen=True)
class TiledExecutor:
    """
    The tiling of one pipeline call: the pipeline's geometry and tiling config, the call's tiling arguments, and what
    the call needs (its steps, its output type, whether it needs every step's latents).
    """

    upscale_factor: int
    vae_scale_factor: int  # image pixels per latent pixel
    lr_size_multiple: int  # LR sizes are padded to a multiple of this
    latent_tile_multiple: int  # tile edges fall on multiples of this (latent pixels)
    border_padding: int  # LR pixels added around every input
    tile_size: int | None  # latent pixels; 0: never tile; None: automatic
    tile_context: int  # latent pixels each tile sees around itself
    default_tile_size: int
    auto_tile_threshold: int
    stream_tiles: bool
    stream_width: int
    tile_batch_size: int = 1  # tiles (of all the images of a batch together) per UNet call
    latent_dtype: torch.dtype = torch.float32  # the UNet's dtype
    deterministic: bool = True  # the scheduler's `is_deterministic`
    num_steps: int = 1
    output_type: str = "pil"
    keeps_steps: bool = False  # callbacks or intermediates need the latents of every step: whole canvases

    def latent_canvas_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The latent canvas of LR images of `size`, padded to `lr_size_multiple` (as `pad_to_multiple` does)."""
        multiple, scale, f = self.lr_size_multiple, self.upscale_factor, self.vae_scale_factor
        return tuple(-(-n // multiple) * multiple * scale // f for n in size)

    def auto_tile_size(self, latent_size: tuple[int, int]) -> int:
        """
        `tile_size=None`: 0 (no tiles) for images up to `auto_tile_threshold` latent pixels on a side, else about
        `default_tile_size`, decided on the image's own size: the border padding alone never adds a tile.
        """
        border = self.border_padding * self.upscale_factor // self.vae_scale_factor
        own_size = max(latent_size) - 2 * border
        if own_size <= self.auto_tile_threshold:
            return 0
        tile_size, count = self.default_tile_size, math.ceil(own_size / self.default_tile_size)
        if count * tile_size < max(latent_size):  # the padding would add a sliver of tiles: widen them
            multiple = self.latent_tile_multiple
            tile_size = math.ceil(max(latent_size) / count / multiple) * multiple
        return tile_size

    def plan(self, latent_size: tuple[int, int]) -> list[Tile]:
        """The tiles of a latent canvas ([`~tiling.plan_tiles`]): one (the whole canvas) unless it is tiled."""
        height, width = latent_size
        tile_size = self.auto_tile_size(latent_size) if self.tile_size is None else self.tile_size
        if not tile_size or tile_size >= max(latent_size):
            return plan_tiles(height, width, max(height, width), 0)
        return plan_tiles(height, width, tile_size, self.tile_context, self.latent_tile_multiple)

    def unet_pixels(self, size: tuple[int, int]) -> int:
        """The latent pixels one reverse step feeds the UNet for an LR image of `size`: every tile with its context."""
        pad = self.border_padding
        tiles = self.plan(self.latent_canvas_size((size[0] + 2 * pad, size[1] + 2 * pad)))
        return sum(tile.outer.shape[0] * tile.outer.shape[1] for tile in tiles)

    def batches(self, sizes: list[tuple[int, int]]) -> list["TiledBatch"]:
        """
        The images of a call (their LR `sizes`, border padding included, in input order) in batches of one size, at
        most `tile_batch_size` images each, so that a UNet batch (images x tiles) never exceeds `tile_batch_size`.
        """
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            by_size.setdefault(tuple(size), []).append(index)
        plans = {size: self.plan(self.latent_canvas_size(size)) for size in by_size}
        return [
            TiledBatch(self, size, indices[start : start + self.tile_batch_size], plans[size])
            for size, indices in by_size.items()
            for start in range(0, len(indices), self.tile_batch_size)
        ]

    def streams(self, tiles: list[Tile]) -> bool:
        """Whether a canvas cut into `tiles` runs as a wavefront ([`~tiling.Wavefront`]): a deterministic chain in
        several tile rows, when no caller needs every step's latents (callbacks, intermediates, latent output)."""
        wanted = self.stream_tiles and not self.keeps_steps and self.output_type != "latent"
        return self.deterministic and wanted and len(tile_rows(tiles)) > 1

    def strips(self, tiles: list[Tile]) -> list[tuple[Box, Box, list[Tile]]]:
        """
        The column strips a streamed canvas runs in ([`~tiling.column_strips`]): at most `stream_width` latent pixels
        wide, with a halo of neighbouring tile columns as wide as the error at a cut edge spreads over the chain (the
        tile context at every step, encoding and decoding). A strip writes only its own columns: every output pixel
        sees what it sees on the whole canvas.
        """
        context = max(max(t.inner.left - t.outer.left, t.outer.right - t.inner.right) for t in tiles)
        halo = (self.num_steps + 2) * context
        return column_strips(tiles, self.stream_width, halo)


class TiledBatch:
    """
    LR images of one size that go through the chain together, cut into the same `tiles`: the strips they run in, and
    the output their decoded tiles are pasted into.
    """

    def __init__(self, executor: TiledExecutor, size: tuple[int, int], indices: list[int], tiles: list[Tile]):
        self.executor, self.size, self.indices, self.tiles = executor, size, indices, tiles
        self.streamed = executor.streams(tiles)
        # tiles per UNet call: the batch's images times these stay within `tile_batch_size`
        self.tiles_at_once = max(1, executor.tile_batch_size // len(indices))
        self.lr = self.gray = self.output = self.latents = None

    def unet_calls(self) -> int:
        """UNet calls per reverse step ([`DenoiseBand.unet_batches`]; streamed, within a tile row of a strip, halo
        tiles included)."""

        def calls(tiles):
            return sum(math.ceil(n / self.tiles_at_once) for n in Counter(t.outer.shape for t in tiles).values())

        if not self.streamed:
            return calls(self.tiles)
        return sum(calls(row) for _, _, strip in self.executor.strips(self.tiles) for row in tile_rows(strip))

    def start(self, lr: torch.Tensor):
        """Take the batch's LR images `(B, 3, h, w)` in `[-1, 1]`, padded to the canvas, and make their output."""
        executor = self.executor
        self.lr = lr
        self.gray = ((lr[:, 0] == lr[:, 1]).flatten(1).all(1) & (lr[:, 1] == lr[:, 2]).flatten(1).all(1)).cpu()
        if executor.output_type != "latent":
            scale = executor.upscale_factor
            self.output = CANVASES[executor.output_type](lr.shape[0], (self.size[0] * scale, self.size[1] * scale))

    def strips(self) -> Iterator["ChainStrip"]:
        """The strips the chain runs in: column strips of a streamed canvas, or the whole canvas."""
        f, scale = self.executor.vae_scale_factor, self.executor.upscale_factor
        whole = Box(0, self.lr.shape[-2] * scale // f, 0, self.lr.shape[-1] * scale // f)
        for own, region, tiles in self.executor.strips(self.tiles) if self.streamed else [(None, whole, self.tiles)]:
            yield ChainStrip(self, own, region, tiles)

    def result(self):
        """The batch's output: its canvas' images, or the final latents (`output_type="latent"`)."""
        return self.latents if self.output is None else self.output.result()


class ChainStrip:
    """
    One strip of a batch's canvas going through the chain, as a [`~tiling.Wavefront`]: for each output tile row, the
    bands (tile rows) that encoding and each reverse step must compute first, then the band to decode.
    """

    def __init__(self, batch: TiledBatch, own: Box | None, region: Box, tiles: list[Tile]):
        executor = batch.executor
        self.batch, self.own, self.region = batch, own, region
        self.wave = Wavefront(tiles, region, executor.num_steps, not batch.streamed, executor.deterministic)

    def output_rows(self) -> range:
        return self.wave.output_rows()

    def to_encode(self, row: int) -> Iterator["EncodeBand"]:
        """The bands to encode before output row `row`; each is kept once the loop has filled it."""
        wave = self.wave
        for k in wave.advance(0, row):
            band = EncodeBand(self.batch, wave.rows[k], wave.bands[k])
            yield band
            wave.y.append(band.y)
            wave.condition.append(band.condition)
            if wave.x[0] is not wave.y:  # x_T = y for a deterministic chain: one window, not a copy
                wave.x[0].append(band.x_T)

    def to_denoise(self, step: int, row: int) -> Iterator["DenoiseBand"]:
        """The bands reverse step `step` (0-based) computes before output row `row`; each kept once stepped."""
        wave, batch = self.wave, self.batch
        for k in wave.advance(step + 1, row):
            per_tile = batch.streamed or (len(wave.rows[k]) > 1 and batch.executor.deterministic)
            band = DenoiseBand(wave, step, k, per_tile=per_tile, tiles_at_once=batch.tiles_at_once)
            yield band
            wave.x[step + 1].append(band.x_prev)

    def to_decode(self, row: int) -> Iterator["DecodeBand"]:
        """The band of output row `row`, once the chain has finished it (nothing to decode for latent output)."""
        batch, executor = self.batch, self.batch.executor
        if batch.output is None:
            f, scale = executor.vae_scale_factor, executor.upscale_factor
            latent_size = (math.ceil(batch.size[0] * scale / f), math.ceil(batch.size[1] * scale / f))
            batch.latents = self.wave.latest().crop(self.region)[..., : latent_size[0], : latent_size[1]].float().cpu()
        else:
            columns = (self.own.left, self.own.right) if self.own else None
            yield DecodeBand(self.wave.latest(), self.wave.rows[row], batch.output, batch, columns)
        self.wave.decoded_row()

    # On a whole canvas (not streamed): every step's latents, for callbacks and intermediates

    def step_tensors(self, step: int) -> dict[str, torch.Tensor]:
        """The canvas after reverse step `step` (0-based): `latents`, `lr_latents` (`y`) and `lr_condition`."""
        wave, region = self.wave, self.wave.bands[0]
        return {
            "latents": wave.x[step + 1].crop(region),
            "lr_latents": wave.y.crop(region),
            "lr_condition": wave.condition.crop(region),
        }

    def replace_latents(self, step: int, latents: torch.Tensor):
        """A callback's latents replace those after reverse step `step`."""
        region = self.wave.bands[0]
        self.wave.x[step + 1] = RowWindow(latents, region.top, region.left)

    def to_decode_step(self, step: int) -> "DecodeBand":
        """The whole canvas after reverse step `step`, to decode into an output of its own (a tensor for latents)."""
        batch, latents = self.batch, self.wave.x[step + 1]
        scale, output_type = batch.executor.upscale_factor, batch.executor.output_type
        size = (batch.size[0] * scale, batch.size[1] * scale)
        output = CANVASES["pt" if output_type == "latent" else output_type](batch.lr.shape[0], size)
        return DecodeBand(latents, self.wave.rows[0], output, batch)


class EncodeBand:
    """A band to encode: the loop [`put`]s the `encode_lr` of each tile's LR, and sets the chain's start `x_T`."""

    def __init__(self, batch: TiledBatch, tiles: list[Tile], region: Box):
        self.lr_images, self.tiles, self.region = batch.lr, tiles, region
        self.f, self.scale = batch.executor.vae_scale_factor, batch.executor.upscale_factor
        self.dtype = batch.executor.latent_dtype
        self.y = self.condition = self.x_T = None

    def lr(self, tile: Tile) -> torch.Tensor:
        """The LR pixels under `tile` with its context."""
        return tile.outer.scaled(self.f, self.scale).crop(self.lr_images)

    def put(self, tile: Tile, y: torch.Tensor, condition: torch.Tensor):
        """Keep the tile's own pixels of its latent `y` and the UNet's LR `condition`."""
        if self.y is None:
            batch = self.lr_images.shape[0]
            self.y = self.lr_images.new_empty(batch, y.shape[1], *self.region.shape, dtype=self.dtype)
            self.condition = self.lr_images.new_empty(batch, condition.shape[1], *self.region.shape, dtype=self.dtype)
        own, target = tile.inner.within(tile.outer), tile.inner.shifted(self.region.top, self.region.left)
        target.crop(self.y).copy_(own.crop(y))
        target.crop(self.condition).copy_(own.crop(condition))


class DenoiseBand:
    """
    A band one reverse step computes: its tiles in UNet batches, each tile seen with its context, then stepped. Tiles
    of a deterministic chain step as soon as they are predicted (the step is elementwise), so that no full-size model
    output is kept; a noisy chain, or a single tile, steps the whole band at once, so that the noise does not depend
    on the tiling.
    """

    def __init__(self, wave: Wavefront, step: int, row: int, *, per_tile: bool, tiles_at_once: int):
        self.latents, self.lr_latents, self.condition = wave.x[step], wave.y, wave.condition
        self.tiles, self.region = wave.rows[row], wave.bands[row]
        self.per_tile, self.tiles_at_once = per_tile, tiles_at_once
        self.x_prev, self.predicted = None, 0  # the band after the step, and how many of its tiles are predicted

    def unet_batches(self) -> Iterator[list[Tile]]:
        """The band's tiles in batches of at most `tiles_at_once` tiles of one shape."""
        by_shape: dict[tuple[int, int], list[Tile]] = {}
        for tile in self.tiles:
            by_shape.setdefault(tile.outer.shape, []).append(tile)
        for group in by_shape.values():
            for start in range(0, len(group), self.tiles_at_once):
                yield group[start : start + self.tiles_at_once]

    def model_input(self, tiles: list[Tile]) -> tuple[torch.Tensor, torch.Tensor]:
        """`(x_t, lr_condition)` of `tiles` with their context, concatenated along the batch."""
        x_t = torch.cat([self.latents.crop(tile.outer) for tile in tiles])
        return x_t, torch.cat([self.condition.crop(tile.outer) for tile in tiles])

    def to_step(self, tiles: list[Tile], model_output: torch.Tensor):
        """
        `(x_t, y, prediction, x_prev)` for each tile of `tiles` (`model_output` the UNet's output on them), or for the
        whole band once its last tiles are predicted: the loop writes the step's `x_{t-1}` into `x_prev`.
        """
        for tile, output in zip(tiles, model_output.chunk(len(tiles))):
            prediction = tile.inner.within(tile.outer).crop(output)
            if self.x_prev is None:
                self.x_prev = prediction.new_empty(*prediction.shape[:2], *self.region.shape)
            x_prev = tile.inner.shifted(self.region.top, self.region.left).crop(self.x_prev)
            if self.per_tile:
                yield self.latents.crop(tile.inner), self.lr_latents.crop(tile.inner), prediction, x_prev
            else:
                x_prev.copy_(prediction)
        self.predicted += len(tiles)
        if not self.per_tile and self.predicted == len(self.tiles):
            yield self.latents.crop(self.region), self.lr_latents.crop(self.region), self.x_prev, self.x_prev


class DecodeBand:
    """
    A band to decode: the loop [`put`]s the decoded latents of each tile, whose own pixels (within the strip's own
    `columns`, a `(left, right)` latent span) are pasted into `output` ([`~canvas.Canvas`]), gray inputs kept gray.
    """

    def __init__(self, latents: RowWindow, tiles: list[Tile], output, batch: TiledBatch, columns=None):
        f = self.f = batch.executor.vae_scale_factor
        self.source, self.output, self.gray = latents, output, batch.gray
        left, right = (columns[0] * f, columns[1] * f) if columns else (0, output.width)
        self.owned = Box(0, output.height, left, min(right, output.width))
        self.tiles = [tile for tile in tiles if self.box(tile) is not None]  # halo tiles own no output pixel

    def box(self, tile: Tile) -> Box | None:
        """The output pixels `tile` owns, `None` when there are none."""
        box = tile.inner.scaled(self.f).clipped(self.owned)
        return box if box.bottom > box.top and box.right > box.left else None

    def latents(self, tile: Tile) -> torch.Tensor:
        """The latents `tile` sees, with its context."""
        return self.source.crop(tile.outer)

    def put(self, tile: Tile, images: torch.Tensor):
        """Paste the tile's own pixels of its decoded `images` (in `[-1, 1]`) into the output."""
        box = self.box(tile)
        image = VaeImageProcessor.denormalize(box.within(tile.outer.scaled(self.f)).crop(images).float().cpu())
        if self.gray.any():
            image[self.gray] = to_gray(image[self.gray])
        self.output.paste(box, image)
