"""Where the tiles of a scene go, and how a tile's pixels map back to the scene's.

Tiles are laid out in scene (source) pixels: `src` pixels a side, read resampled to the model's
`tile` pixels, so `src / tile` is the resampling factor (1 when the GSDs agree or in as-is mode).
Offsets are integers so reads never need sub-pixel windows. The last row and column are snapped to
the scene edge: every pixel is covered and every tile keeps its full size; only a scene smaller than
one tile gives a shorter read, which is padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

TRUNCATION_MARGIN = (
    2.0  # model pixels: a box this close to an inner tile edge may be cut by it (Tile.truncated)
)


@dataclass(frozen=True)
class Tile:
    index: int
    col: int  # window in scene pixels
    row: int
    width: int
    height: int
    out_width: int  # the window's size once resampled, in model pixels (<= the model's tile)
    out_height: int
    inner: tuple[
        bool, bool, bool, bool
    ]  # left, top, right, bottom: does another tile continue past it?

    @property
    def window(self) -> Window:
        return Window(self.col, self.row, self.width, self.height)

    def to_scene(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes in model pixels of this tile -> scene pixels (float64), clipped to the window."""
        sx, sy = self.width / self.out_width, self.height / self.out_height
        out = boxes.astype(np.float64) * (sx, sy, sx, sy) + (self.col, self.row, self.col, self.row)
        return np.clip(
            out, (self.col, self.row) * 2, (self.col + self.width, self.row + self.height) * 2
        )

    def truncated(self, boxes: np.ndarray, margin: float) -> np.ndarray:
        """Which boxes (model pixels) touch an inner edge, i.e. may show only part of their
        object."""
        near = (
            boxes[:, 0] <= margin,
            boxes[:, 1] <= margin,
            boxes[:, 2] >= self.out_width - margin,
            boxes[:, 3] >= self.out_height - margin,
        )
        return (
            np.logical_or.reduce([n & inner for n, inner in zip(near, self.inner)])
            if len(boxes)
            else np.zeros(0, bool)
        )


def offsets(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis: every `stride`, the last one flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return starts + [length - size]


def plan(width: int, height: int, src: int, tile: int, overlap: float) -> list[Tile]:
    """Tiles of `src` scene pixels (read as `tile` model pixels) overlapping by `overlap`,
    row-major."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, round(src * (1 - overlap)))
    cols, rows = offsets(width, src, stride), offsets(height, src, stride)
    w, h = min(src, width), min(src, height)
    out_w, out_h = (max(1, min(tile, round(v * tile / src))) for v in (w, h))
    return [
        Tile(
            i * len(cols) + j,
            c,
            r,
            w,
            h,
            out_w,
            out_h,
            (c > 0, r > 0, c + w < width, r + h < height),
        )
        for i, r in enumerate(rows)
        for j, c in enumerate(cols)
    ]
