"""The contract between an exported model and the runtime: what the ONNX file says about itself.

Each field is one `metadata_props` entry whose value is JSON, so any ONNX tool can read it.
The exporter writes it (export/), the runtime refuses a model without it.

`read_props` reads these entries straight from the file's top-level protobuf fields, seeking past
the graph, so the runtime knows a model's precision before it builds a session (TensorRT's int8
switch is a session option, and building a TensorRT engine twice costs minutes on large models)
without the onnx package or loading the weights. The field numbers are those of ModelProto in
onnx/onnx.proto (`metadata_props = 14`, each a StringStringEntryProto of key = 1, value = 2).
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, fields

from scalemae_det.base.errors import InputError

FORMAT_VERSION = 1
# Share of a tile's side it shares with its neighbour when neither the caller nor the model says
# otherwise: predict's tiling, score's seam count and the overlap a GIS export recommends.
DEFAULT_OVERLAP = 0.2
# IoU over which predict's test-time views fuse two boxes into one (runtime/tta.py): weighted box
# fusion's published threshold (Solovyev et al., arXiv:1910.13302, section 4).
DEFAULT_TTA_IOU = 0.55

# Graph I/O names, fixed by the contract.
INPUT_NAME = "images"
OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")
PRECISIONS = ("float32", "float16", "int8")
# The graph's score threshold is an initializer of this name, so a session can override it
# (onnxruntime SessionOptions.add_initializer): the export's parity check probes below it.
THRESHOLD_INITIALIZER = "score_threshold"
# An export of another flavour (export/deepness.py: for QGIS Deepness and GeoDeep) names it here,
# with that tool's metadata instead of this contract's
FLAVOUR_KEY = "scalemae_det_flavour"


class MetadataError(InputError):
    """The model has no (or unusable) scalemae-det metadata."""


@dataclass(frozen=True)
class ModelMetadata:
    class_names: list[str]  # index i is class id i + 1; 0 is background
    gsd: float  # metres per pixel of the tiles the model expects
    res_per_metre: float  # positional-embedding factor per metre of GSD
    tile: int  # square tile side in pixels
    batch: int  # fixed batch size of the graph
    max_detections: int  # rows per image in the padded outputs
    score_threshold: float
    model_config: str
    source_sha256: str
    scalemae_det_version: str
    opset: int
    input_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    precision: str = (
        "float32"  # one of PRECISIONS; int8 graphs carry QuantizeLinear/DequantizeLinear (QDQ)
    )
    # int8 only: file name, in the model's folder, of the TensorRT calibration table (onnxruntime's
    # flatbuffers format) measured on the same calibration tiles
    calibration_table: str | None = None
    # extra passes of the box head over its own boxes in the graph (export --refine-boxes)
    refine_boxes: int = 0
    format_version: int = FORMAT_VERSION

    @property
    def box_head_passes(self) -> str:
        """The words export and predict add to a model's description for its box-head passes
        (`, box head N passes`), empty without refinement."""
        return f", box head {1 + self.refine_boxes} passes" if self.refine_boxes else ""

    def to_props(self) -> dict[str, str]:
        return {k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        if "format_version" not in props and FLAVOUR_KEY in props:
            raise MetadataError(
                f"{source}: a scalemae-det export of flavour {props[FLAVOUR_KEY]} (for QGIS "
                "Deepness and GeoDeep: one (1, N, 5 + classes) output and their metadata), which "
                "this runtime does not run; run it in Deepness or GeoDeep, or export the "
                "checkpoint again in the default flavour"
            )
        if "format_version" not in props:
            raise MetadataError(
                f"{source}: not a scalemae-det model (no scalemae-det metadata); export it with "
                "`scalemae-det export`"
            )
        try:
            values = {f.name: json.loads(props[f.name]) for f in fields(cls) if f.name in props}
        except json.JSONDecodeError as exc:
            raise MetadataError(f"{source}: unreadable scalemae-det metadata ({exc})") from None
        if values["format_version"] != FORMAT_VERSION:
            raise MetadataError(
                f"{source}: metadata format {values['format_version']} is not supported (expected "
                f"{FORMAT_VERSION})"
            )
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING]
        if missing:
            raise MetadataError(f"{source}: scalemae-det metadata lacks {', '.join(missing)}")
        for key in ("input_range", "mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ModelMetadata:
        return cls.from_props(read_props(path), str(path))


def _varint(f) -> int:
    shift = value = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError
        value |= (byte[0] & 0x7F) << shift
        shift += 7
        if byte[0] < 0x80:
            return value


def _entry(data: bytes) -> tuple[str, str]:
    """A StringStringEntryProto: (key, value)."""
    import io

    f, out = io.BytesIO(data), {1: b"", 2: b""}
    while f.tell() < len(data):
        tag = _varint(f)
        if tag & 7 != 2:
            raise ValueError("unexpected wire type in a metadata entry")
        out[tag >> 3] = f.read(_varint(f))
    return out[1].decode(), out[2].decode()


def read_props(path: str | os.PathLike) -> dict[str, str]:
    """The `metadata_props` of an ONNX file, read without parsing the graph; raises MetadataError
    when
    the file is not a protobuf ModelProto."""
    props = {}
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        try:
            while f.tell() < size:
                tag = _varint(f)
                kind, number = tag & 7, tag >> 3
                if kind == 0:
                    _varint(f)
                elif kind == 2:
                    length = _varint(f)
                    if number == 14:
                        key, value = _entry(f.read(length))
                        props[key] = value
                    else:
                        f.seek(length, 1)
                elif kind in (1, 5):
                    f.seek(8 if kind == 1 else 4, 1)
                else:
                    raise ValueError(f"wire type {kind}")
        except (EOFError, ValueError, UnicodeDecodeError):
            raise MetadataError(f"{path}: not an ONNX model (unreadable protobuf)") from None
    return props
