"""The contract between an exported model and the runtime: what the ONNX file says about itself.

Each field is one `metadata_props` entry whose value is JSON, so any ONNX tool can read it.
The exporter writes it (export/), the runtime refuses a model without it.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields

from scalemae_det.base.errors import UserError

FORMAT_VERSION = 1

# Graph I/O names, fixed by the contract.
INPUT_NAME = "images"
OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")
# The graph's score threshold is an initializer of this name, so a session can override it
# (onnxruntime SessionOptions.add_initializer): the export's parity check probes below it.
THRESHOLD_INITIALIZER = "score_threshold"


class MetadataError(UserError):
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
    precision: str = "float32"
    format_version: int = FORMAT_VERSION

    def to_props(self) -> dict[str, str]:
        return {k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> "ModelMetadata":
        if "format_version" not in props:
            raise MetadataError(f"{source}: not a scalemae-det model (no scalemae-det metadata); export it with `scalemae-det export`")
        try:
            values = {f.name: json.loads(props[f.name]) for f in fields(cls) if f.name in props}
        except json.JSONDecodeError as exc:
            raise MetadataError(f"{source}: unreadable scalemae-det metadata ({exc})") from None
        if values["format_version"] != FORMAT_VERSION:
            raise MetadataError(f"{source}: metadata format {values['format_version']} is not supported (expected {FORMAT_VERSION})")
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING]
        if missing:
            raise MetadataError(f"{source}: scalemae-det metadata lacks {', '.join(missing)}")
        for key in ("input_range", "mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
