"""Export options, torch-free so that the CLI can show their defaults without importing torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scalemae_det.base import checks
from scalemae_det.base.errors import ParameterError
from scalemae_det.base.metadata import DEFAULT_OVERLAP

Log = Callable[[str], None]  # progress messages, one per step

PRECISIONS = {
    "fp32": "float32",
    "fp16": "float16",
    "int8": "int8",
}  # option value -> metadata precision
CALIBRATION_METHODS = (
    "minmax",
    "entropy",
    "percentile",
)  # export.quantize's, kept here free of onnx
TILE_MULTIPLE = 32  # the transform pads to 32; a tile that needs no padding keeps the graph exact
DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17 on
# Opsets the exporter can write for this model: scaled_dot_product_attention needs 14; 20 is the
# newest the TorchScript-based exporter knows (torch/onnx/_constants.py,
# ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET; a test keeps the two equal), and ONNX Runtime has no RoiAlign
# for opset 22 anyway.
MIN_OPSET, MAX_OPSET = 14, 20
# Graph flavours: "native" follows this project's contract (base/metadata.py), which the runtime
# runs; "deepness" is the layout and metadata QGIS Deepness and GeoDeep run (export/deepness.py)
FLAVOURS = ("native", "deepness")
DEFAULT_TILE = 800  # for checkpoints that do not record their training input size
TILE_RATIO_WARNED = 2.0  # a tile this many times larger or smaller than the training size
# Most extra passes of the box head over its own boxes (models/detector.py, L1RoIHeads.refined):
# each costs one more box-head run per tile; docs/benchmarks-real.md measures 1 and 2
MAX_REFINE_BOXES = 3


def trained_tile(ckpt: dict) -> int | None:
    """The training input size a checkpoint records (train.py's --input_size), rounded up to a
    multiple of TILE_MULTIPLE; None when it records none (the bundled model, older checkpoints).

    A detector sees objects in the context of the crop it was trained on: run on tiles much larger,
    it finds few of them (a model trained on 256 px crops found 0-24 trees on 512 px tiles where
    256 px tiles found about 180)."""
    size = ckpt.get("input_size", (ckpt.get("args") or {}).get("input_size"))
    if not isinstance(size, int) or size <= 0:
        return None
    return -(-size // TILE_MULTIPLE) * TILE_MULTIPLE


def trained_gsds(ckpt: dict) -> tuple[float, float] | None:
    """The GSDs the model saw in training, (finest, coarsest) metres: the images' median GSD (the
    checkpoint's `gsd`) divided by train.py's --scale_range, as data/transforms.py's resize divides
    it. None when the checkpoint records no scale range (the bundled model, older checkpoints)."""
    scales = (ckpt.get("args") or {}).get("scale_range")
    if not isinstance(scales, list | tuple) or len(scales) != 2 or min(scales) <= 0:
        return None
    gsd = float(ckpt["gsd"])
    return gsd / max(scales), gsd / min(scales)


DEFAULT_BATCH = 4  # of a native export; a deepness export has batch 1 (GeoDeep feeds one tile)


@dataclass(frozen=True)
class ExportSpec:
    """Export options; None takes the checkpoint's value (training GSD, config threshold and
    cap)."""

    gsd: float | None = None
    tile: int | None = None  # the checkpoint's training input size (trained_tile)
    batch: int | None = None  # DEFAULT_BATCH, or 1 for the deepness flavour
    max_detections: int | None = None
    score_threshold: float | None = None
    refine_boxes: int = 0  # extra passes of the box head over its own boxes
    opset: int = DEFAULT_OPSET
    precision: str = "fp32"  # a key of PRECISIONS
    validate: bool = True
    simplify: bool = True  # onnxslim, kept only when parity holds: needs validate
    # int8 only: scenes/chips (files, directories, globs) to calibrate on, tiles to calibrate with,
    # the calibration method, the gate's bar, and an optional labelled set (COCO labels + image
    # folder)
    calibration: tuple[str, ...] = ()
    calibration_tiles: int = 64
    calibration_method: str = "minmax"
    int8_min_agreement: float = 0.95
    int8_labels: str | None = None
    int8_images: str | None = None
    # the graph's flavour (FLAVOURS); deepness only: the tile overlap (a fraction, as predict's)
    # that the model tells Deepness and GeoDeep to use, DEFAULT_OVERLAP when None
    flavour: str = "native"
    overlap: float | None = None

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    @property
    def deepness(self) -> bool:
        return self.flavour == "deepness"

    @property
    def resolved_batch(self) -> int:
        """The graph's batch size: `batch`, else the flavour's default."""
        return self.batch if self.batch is not None else 1 if self.deepness else DEFAULT_BATCH

    @property
    def resolved_overlap(self) -> float:
        return DEFAULT_OVERLAP if self.overlap is None else self.overlap

    @property
    def int8(self) -> bool:
        return self.precision == "int8"

    def check_format(self, kind: str, out) -> None:
        """The option errors that depend on the output's format (onnx or torchscript)."""
        if self.deepness and kind != "onnx":
            raise ParameterError(
                "flavour",
                "Deepness and GeoDeep run ONNX models: the deepness flavour is for ONNX "
                f"exports, not {kind}",
                value=self.flavour,
                source=str(out),
            )
        if self.deepness and Path(out).suffix.lower() != ".onnx":
            raise ParameterError(
                "out",
                "a Deepness/GeoDeep model is an ONNX file: give it the .onnx suffix "
                "(Deepness' model dialog lists .onnx files)",
                value=str(out),
            )
        if kind == "torchscript" and self.int8:
            raise ParameterError(
                "precision",
                "int8 is for ONNX exports (onnxruntime's quantization), not TorchScript",
                value=self.precision,
                source=str(out),
            )

    def check(self) -> None:
        """The option errors that need no checkpoint."""
        checks.number("tile", self.tile, lo=TILE_MULTIPLE, integer=True)
        if self.tile is not None and self.tile % TILE_MULTIPLE:
            raise ParameterError(
                "tile", f"must be a positive multiple of {TILE_MULTIPLE}", value=self.tile
            )
        checks.number("batch", self.batch, lo=1, integer=True)
        checks.number("gsd", self.gsd, lo=0, lo_open=True)  # metres per pixel
        checks.number("max_detections", self.max_detections, lo=1, integer=True)
        checks.number("score_threshold", self.score_threshold, lo=0, hi=1, hi_open=True)
        checks.number("refine_boxes", self.refine_boxes, lo=0, hi=MAX_REFINE_BOXES, integer=True)
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ParameterError(
                "opset", f"supported opsets are {MIN_OPSET} to {MAX_OPSET}", value=self.opset
            )
        checks.choice("precision", self.precision, PRECISIONS)
        self._check_int8()
        self._check_flavour()

    def _check_flavour(self) -> None:
        checks.choice("flavour", self.flavour, FLAVOURS)
        checks.number("overlap", self.overlap, lo=0, hi=1, hi_open=True)
        if not self.deepness:
            if self.overlap is not None:
                raise ParameterError(
                    "overlap",
                    "`overlap` is only used with `flavour` deepness (this export is "
                    f"{self.flavour})",
                )
            return
        if self.batch not in (None, 1):
            raise ParameterError(
                "batch",
                "the deepness flavour has batch 1: GeoDeep feeds the model one tile at a time, "
                "as (1, 3, T, T)",
                value=self.batch,
            )
        percent = self.resolved_overlap * 100
        if abs(percent - round(percent)) > 1e-9:
            raise ParameterError(
                "overlap",
                "Deepness reads the overlap as a whole percent: give a multiple of 0.01",
                value=self.overlap,
            )

    def _check_int8(self) -> None:
        int8_only = {
            "calibration": bool(self.calibration),
            "int8_labels": self.int8_labels is not None,
            "int8_images": self.int8_images is not None,
        }
        if not self.int8:
            given = [name for name, on in int8_only.items() if on]
            if given:
                raise ParameterError(
                    given[0],
                    f"`{given[0]}` is only used with `precision` int8 (this export is "
                    f"{self.precision})",
                )
            return
        if not self.calibration:
            raise ParameterError(
                "calibration",
                "`precision` int8 needs `calibration`: the scenes or chips to "
                "calibrate on, read as predict reads them",
            )
        checks.number("calibration_tiles", self.calibration_tiles, lo=1, integer=True)
        checks.choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        checks.number("int8_min_agreement", self.int8_min_agreement, lo=0, hi=1, lo_open=True)
        if (self.int8_labels is None) != (self.int8_images is None):
            raise ParameterError(
                "int8_labels",
                "`int8_labels` and `int8_images` go together (a COCO label file "
                "and its image folder)",
            )


def quiet(msg: str) -> None:
    """The default Log: library callers get no output."""
