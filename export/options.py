"""Export options, torch-free so that the CLI can show their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from scalemae_det.base import checks
from scalemae_det.base.errors import ParameterError

Log = Callable[[str], None]  # progress messages, one per step

TILE_MULTIPLE = 32  # the transform pads to 32; a tile that needs no padding keeps the graph exact
DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17 on
# Opsets the exporter can write for this model: scaled_dot_product_attention needs 14; 20 is the newest the
# TorchScript-based exporter knows (torch/onnx/_constants.py, ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET; a test
# keeps the two equal), and ONNX Runtime has no RoiAlign for opset 22 anyway.
MIN_OPSET, MAX_OPSET = 14, 20


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
        checks.number("tile", self.tile, lo=TILE_MULTIPLE, integer=True)
        if self.tile % TILE_MULTIPLE:
            raise ParameterError("tile", f"must be a positive multiple of {TILE_MULTIPLE}", value=self.tile)
        checks.number("batch", self.batch, lo=1, integer=True)
        checks.number("gsd", self.gsd, lo=0, lo_open=True)  # metres per pixel
        checks.number("max_detections", self.max_detections, lo=1, integer=True)
        checks.number("score_threshold", self.score_threshold, lo=0, hi=1, hi_open=True)
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ParameterError("opset", f"supported opsets are {MIN_OPSET} to {MAX_OPSET}", value=self.opset)


def quiet(msg: str) -> None:
    """The default Log: library callers get no output."""
