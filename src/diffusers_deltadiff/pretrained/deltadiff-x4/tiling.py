"""Tiles of a latent canvas, each seen with a margin of context, for upscaling images of any size in bounded memory."""

from dataclasses import dataclass


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


def spans(length: int, tile: int) -> list[tuple[int, int]]:
    """`[start, stop)` spans of `tile` cutting `[0, length)`, the last one shorter when `tile` does not divide it."""
    return [(start, min(start + tile, length)) for start in range(0, length, tile)]


def plan_tiles(height: int, width: int, tile: int, context: int, multiple: int = 1) -> list[Tile]:
    """
    Cut a `height` x `width` canvas into tiles of `tile` x `tile` (fewer at the bottom and right), each seen with
    `context` pixels on every side that has a neighbour. Tile edges and context are rounded up to multiples of
    `multiple` (a UNet's downsampling grid), so that every crop sees the same grid as the whole canvas. A tile at least
    as large as the canvas gives one tile: the whole canvas.
    """
    if tile <= 0:
        raise ValueError(f"The tile size must be positive, got {tile}.")
    if context < 0:
        raise ValueError(f"The tile context must be zero or positive, got {context}.")
    tile = -(-tile // multiple) * multiple
    context = -(-context // multiple) * multiple
    tiles = []
    for top, bottom in spans(height, tile):
        for left, right in spans(width, tile):
            inner = Box(top, bottom, left, right)
            outer = Box(
                max(top - context, 0),
                min(bottom + context, height),
                max(left - context, 0),
                min(right + context, width),
            )
            tiles.append(Tile(inner, outer))
    return tiles
