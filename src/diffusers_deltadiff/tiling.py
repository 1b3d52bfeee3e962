"""Tiles of a latent canvas, each seen with a margin of context, for upscaling images of any size in bounded memory."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Box:
    """Rows `[top, bottom)` and columns `[left, right)` of a grid."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.bottom - self.top, self.right - self.left)

    def scaled(self, numerator: int, denominator: int = 1) -> "Box":
        """The same box on a grid `numerator / denominator` times finer (edges must land on whole pixels)."""
        edges = [edge * numerator for edge in (self.top, self.bottom, self.left, self.right)]
        if any(edge % denominator for edge in edges):
            raise ValueError(f"{self} does not land on whole pixels at scale {numerator}/{denominator}.")
        return Box(*(edge // denominator for edge in edges))

    def shifted(self, rows: int, cols: int = 0) -> "Box":
        """The same box on a grid whose origin is this grid's row `rows`, column `cols`."""
        return Box(self.top - rows, self.bottom - rows, self.left - cols, self.right - cols)

    def clipped(self, other: "Box") -> "Box":
        """The part of this box inside `other` (empty boxes have `bottom <= top` or `right <= left`)."""
        return Box(
            max(self.top, other.top),
            min(self.bottom, other.bottom),
            max(self.left, other.left),
            min(self.right, other.right),
        )

    def within(self, outer: "Box") -> "Box":
        """This box in the coordinates of `outer` (which contains it)."""
        return Box(self.top - outer.top, self.bottom - outer.top, self.left - outer.left, self.right - outer.left)

    def crop(self, images):
        """`images[..., rows, cols]` of a `(..., H, W)` tensor."""
        return images[..., self.top : self.bottom, self.left : self.right]


@dataclass(frozen=True)
class Tile:
    """A tile writes its `inner` box and sees its `outer` box: `inner` grown by the context, clipped to the canvas."""

    inner: Box
    outer: Box


def spans(length: int, size: int) -> list[tuple[int, int]]:
    """`[start, stop)` spans of `size` cutting `[0, length)`, the last one shorter when `size` does not divide it."""
    return [(start, min(start + size, length)) for start in range(0, length, size)]


def plan_tiles(height: int, width: int, tile_size: int, tile_context: int, multiple: int = 1) -> list[Tile]:
    """
    The plan of a `height` x `width` canvas: tiles of `tile_size` x `tile_size` (smaller at the bottom and right),
    each seen with `tile_context` pixels on every side that has a neighbour. Tile edges and context are rounded up to
    multiples of `multiple` (a UNet's downsampling grid), so that every crop sees the same grid as the whole canvas. A
    tile at least as large as the canvas gives one tile: the whole canvas.
    """
    if tile_size <= 0:
        raise ValueError(f"The tile size must be positive, got {tile_size}.")
    if tile_context < 0:
        raise ValueError(f"The tile context must be zero or positive, got {tile_context}.")
    tile_size = -(-tile_size // multiple) * multiple
    tile_context = -(-tile_context // multiple) * multiple
    tiles = []
    for top, bottom in spans(height, tile_size):
        for left, right in spans(width, tile_size):
            inner = Box(top, bottom, left, right)
            outer = Box(
                max(top - tile_context, 0),
                min(bottom + tile_context, height),
                max(left - tile_context, 0),
                min(right + tile_context, width),
            )
            tiles.append(Tile(inner, outer))
    return tiles


def tile_rows(tiles: list[Tile]) -> list[list[Tile]]:
    """The tiles of a plan grouped by row (the tiles of a row share their inner and outer rows), top to bottom."""
    rows: dict[int, list[Tile]] = {}
    for tile in tiles:
        rows.setdefault(tile.inner.top, []).append(tile)
    return [rows[top] for top in sorted(rows)]


def column_strips(tiles: list[Tile], max_width: int, halo: int) -> list[tuple[Box, Box, list[Tile]]]:
    """
    Cut a plan into strips of whole tile columns at most `max_width` wide (one column at least), each with `halo`
    pixels of neighbouring columns (whole tile columns, at least `halo` wide) as context. Returns, for each strip,
    its own columns and its region (own columns and halo), all rows, and its tiles: those of its region, their
    context clipped to the region. A strip computed on its own is exact in its own columns when `halo` covers how
    far the error at a cut edge spreads.
    """
    columns = sorted({(t.inner.left, t.inner.right) for t in tiles})
    height = max(t.inner.bottom for t in tiles)
    strips, start = [], 0
    while start < len(columns):
        stop = start + 1
        while stop < len(columns) and columns[stop][1] - columns[start][0] <= max_width:
            stop += 1
        left, right = columns[start][0], columns[stop - 1][1]
        halo_left = max((c[0] for c in columns[: start + 1] if c[0] <= left - halo), default=0)
        halo_right = min((c[1] for c in columns[stop - 1 :] if c[1] >= right + halo), default=columns[-1][1])
        region = Box(0, height, halo_left, halo_right)
        strip_tiles = [
            Tile(t.inner, t.outer.clipped(region))
            for t in tiles
            if halo_left <= t.inner.left and t.inner.right <= halo_right
        ]
        strips.append((Box(0, height, left, right), region, strip_tiles))
        start = stop
    return strips


class RowWindow:
    """
    Rows `[start, stop)` of a `(..., H, W)` canvas held in memory (its columns from `left` on): the whole canvas, or a
    window that moves down it, bands appended at the bottom as they are computed and dropped from the top once
    nothing needs their rows. Bands are kept as they were appended (no copy of the window); a crop across bands
    copies only the crop.
    """

    def __init__(self, data: torch.Tensor | None = None, start: int = 0, left: int = 0):
        self.bands: list[tuple[int, torch.Tensor]] = [] if data is None else [(start, data)]
        self.start, self.left = start, left

    @property
    def stop(self) -> int:
        return self.bands[-1][0] + self.bands[-1][1].shape[-2] if self.bands else self.start

    @property
    def width(self) -> int:
        return self.bands[-1][1].shape[-1] if self.bands else 0

    def append(self, band: torch.Tensor):
        """Add the rows `[stop, stop + band height)`."""
        self.bands.append((self.stop, band))

    def drop_before(self, row: int):
        """Forget the bands that lie wholly above `row`."""
        while self.bands and self.bands[0][0] + self.bands[0][1].shape[-2] <= row:
            self.bands.pop(0)
        self.start = self.bands[0][0] if self.bands else max(self.start, row)

    def crop(self, box: Box) -> torch.Tensor:
        """The canvas' `box`, which must lie within the rows held."""
        if box.top < self.start or box.bottom > self.stop:
            raise IndexError(f"rows [{box.top}, {box.bottom}) are not held (holding [{self.start}, {self.stop})).")
        pieces = []
        for top, band in self.bands:
            part = box.clipped(Box(top, top + band.shape[-2], box.left, box.right))
            if part.bottom > part.top:
                pieces.append(part.shifted(top, self.left).crop(band))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-2)


class Wavefront:
    """
    The order in which the tiles of one strip (or of a whole canvas) go through the reverse chain, and the latents
    held meanwhile: `x[s]` the latents after `s` steps (`x[0]` is `x_T`), `y` the LR latents and `condition` the
    UNet's LR input, each a [`RowWindow`].

    Streamed (`whole_canvas=False`), the tile rows form a wavefront: tile row `k` of step `s` is computed as soon as
    step `s - 1` holds the rows its tiles see, tile row `j` of the output is decoded as soon as the last step holds
    the rows it sees, and rows that no later tile row reads are dropped, so that a few tile rows are held whatever
    the image height. On a whole canvas all tiles form one row: the chain runs step by step over the canvas.

    The pipeline asks, for each output row `j`, which tile rows each step must compute first ([`advance`]).
    """

    def __init__(self, tiles: list[Tile], region: Box, num_steps: int, whole_canvas: bool, start_is_y: bool):
        if whole_canvas:
            self.rows, self.bands, self.seen = [tiles], [region], [(region.top, region.bottom)]
        else:
            self.rows = tile_rows(tiles)
            self.bands = [Box(row[0].inner.top, row[0].inner.bottom, region.left, region.right) for row in self.rows]
            self.seen = [(row[0].outer.top, row[0].outer.bottom) for row in self.rows]
        self.y, self.condition = RowWindow(left=region.left), RowWindow(left=region.left)
        # x_T = y for a deterministic chain: one window, not a copy
        self.x = [self.y if start_is_y else RowWindow(left=region.left)]
        self.x += [RowWindow(left=region.left) for _ in range(num_steps)]
        self.done = [0] * (num_steps + 1)  # tile rows held at each level: encoded (0), then after each step
        self.decoded = 0

    def output_rows(self) -> range:
        return range(len(self.rows))

    def _last_row(self, bottom: int) -> int:
        """The tile row holding canvas row `bottom - 1`."""
        return next(j for j, band in enumerate(self.bands) if band.top < bottom <= band.bottom)

    def advance(self, level: int, j: int):
        """
        Yield the tile rows that `level` (0: encoding, `s`: step `s`) must compute before output row `j` can be
        decoded, in order: the rows the next level needs for its own, up to those that row `j` sees. Each yielded row
        counts as held once the caller has appended it, and what no one reads any more is dropped.
        """
        target = self._last_row(self.seen[j][1])
        for _ in range(len(self.x) - 1 - level):  # down from the last step: each level needs what the next one sees
            target = self._last_row(self.seen[target][1])
        while self.done[level] <= target:
            yield self.done[level]
            self.done[level] += 1
            self.release()

    def latest(self) -> RowWindow:
        """The latents of the last step computed (all steps, unless the call was interrupted)."""
        level = max(s for s, done in enumerate(self.done) if done)
        return self.x[level]

    def decoded_row(self):
        self.decoded += 1
        self.release()

    def release(self):
        """Drop the rows that the next tile row of each reader does not see."""
        count, last = len(self.rows), self.done[-1]
        for level in range(1, len(self.x)):
            reader = self.done[level + 1] if level + 1 < len(self.x) else self.decoded
            self.x[level].drop_before(self.seen[reader][0] if reader < count else self.x[level].stop)
        if self.x[0] is not self.y:  # x_T, read by the first step only
            self.x[0].drop_before(self.seen[self.done[1]][0] if self.done[1] < count else self.x[0].stop)
        if last < count:
            # y is read at its own rows by every step, and as x_T (when it is) at the rows the first step sees
            keep = self.bands[last].top
            if self.x[0] is self.y and self.done[1] < count:
                keep = min(keep, self.seen[self.done[1]][0])
            self.y.drop_before(keep)
            self.condition.drop_before(self.seen[last][0])
