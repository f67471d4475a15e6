"""Export options, torch-free so that the CLI can show their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from scalemae_det.base.errors import UserError

Log = Callable[[str], None]  # progress messages, one per step

PRECISIONS = {"fp32": "float32", "fp16": "float16", "int8": "int8"}  # option value -> metadata precision
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # export.quantize.METHODS, without importing onnx
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
    precision: str = "fp32"  # a key of PRECISIONS
    validate: bool = True
    simplify: bool = True  # onnxslim, kept only when parity holds: needs validate
    # int8 only: scenes/chips (files, directories, globs) to calibrate on, tiles to calibrate with,
    # the calibration method, the gate's bar, and an optional labelled set (COCO labels + image folder)
    calibration: tuple[str, ...] = ()
    calibration_tiles: int = 64
    calibration_method: str = "minmax"
    min_agreement: float = 0.95
    labels: str | None = None
    images: str | None = None

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    @property
    def int8(self) -> bool:
        return self.precision == "int8"

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
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision}: choose one of {', '.join(PRECISIONS)}")
        self._check_int8()

    def _check_int8(self) -> None:
        int8_only = {"--calibration": bool(self.calibration), "--int8-labels": self.labels is not None,
                     "--int8-images": self.images is not None}
        if not self.int8:
            given = [name for name, on in int8_only.items() if on]
            if given:
                raise UserError(f"{given[0]}: only used with --precision int8 (this export is {self.precision})")
            return
        if not self.calibration:
            raise UserError("--precision int8 needs --calibration SCENE.tif|DIR ...: the scenes or chips to "
                            "calibrate on, read as predict reads them")
        if self.calibration_tiles < 1:
            raise UserError(f"--calibration-tiles {self.calibration_tiles}: must be at least 1")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise UserError(f"--calibration-method {self.calibration_method}: choose one of {', '.join(CALIBRATION_METHODS)}")
        if not 0 < self.min_agreement <= 1:
            raise UserError(f"--int8-min-agreement {self.min_agreement}: must be in (0, 1]")
        if (self.labels is None) != (self.images is None):
            raise UserError("--int8-labels and --int8-images go together (a COCO label file and its image folder)")


def quiet(msg: str) -> None:
    """The default Log: library callers get no output."""
