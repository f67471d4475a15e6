"""Export options, torch-free so that the CLI can show their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from scalemae_det.base.errors import UserError

Log = Callable[[str], None]  # progress messages, one per step

TILE_MULTIPLE = 32  # the transform pads to 32; a tile that needs no padding keeps the graph exact
DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17 on


@dataclass(frozen=True)
class ExportSpec:
    """Export options; None takes the checkpoint's value (training GSD, config threshold and cap)."""

    gsd: float | None = None
    tile: int = 800
    batch: int = 4
    max_detections: int | None = None
    score_threshold: float | None = None
    opset: int = DEFAULT_OPSET
    fp16: bool = False
    validate: bool = True
    simplify: bool = True  # onnxslim, kept only when parity holds: needs validate

    def check(self) -> None:
        """The option errors that need no checkpoint."""
        if self.tile < TILE_MULTIPLE or self.tile % TILE_MULTIPLE:
            raise UserError(f"--tile {self.tile}: must be a positive multiple of {TILE_MULTIPLE}")
        if self.batch < 1:
            raise UserError(f"--batch {self.batch}: must be at least 1")
        if self.gsd is not None and not self.gsd > 0:
            raise UserError(f"--gsd {self.gsd}: must be positive (metres per pixel)")
        if self.max_detections is not None and self.max_detections < 1:
            raise UserError(f"--max-detections {self.max_detections}: must be at least 1")
        if self.score_threshold is not None and not 0 <= self.score_threshold < 1:
            raise UserError(f"--score-threshold {self.score_threshold}: must be in [0, 1)")


def quiet(msg: str) -> None:
    """The default Log: library callers get no output."""
