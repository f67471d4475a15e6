"""The `deepness` flavour of the ONNX export: a model that QGIS Deepness and GeoDeep run as it is.

The contract, as both tools read it (Deepness: PUTvision/qgis-plugin-deepness,
src/deepness/processing/models/model_base.py, detector.py and
docs/source/creators/creators_add_metadata_to_model.rst; GeoDeep 0.9.13: geodeep/inference.py,
detection.py, geodeep.py):

1. One input, (1, 3, T, T) float32 RGB in [0, 1]: both divide uint8 pixels by 255. Deepness
   standardises afterwards when the metadata has `standardization_mean`/`_std`, GeoDeep never does,
   so the ImageNet normalisation stays inside the graph (as in every export) and those keys are
   not written. The batch is 1: GeoDeep feeds one tile at a time, as (1, 3, T, T).
2. One output, (1, N, 5 + C), N = the export's max_detections: per row the box as centre x,
   centre y, width, height in tile pixels, the score, then C class columns holding the score in
   the detection's class and 0 elsewhere. Unused rows are all zero.
3. `det_type` "YOLO_v5_or_v7_default": the one layout both parse the same way, and each one's
   default. For it both keep the rows whose column 4 is >= `det_conf`, rank and report them by
   column 4 and take the class as the argmax of the class columns, so the scores they threshold
   and show are this model's own scores and the class is its label. (YOLO_v6 and GeoDeep's
   YOLO_v8/YOLO_v9 want other column orders or a transposed output, and GeoDeep's `retinanet`
   takes the class from a single column's argmax, always class 0.)
4. The rows come after this model's own per-class NMS and score threshold, which the graph keeps.
   Both tools then run a class-agnostic NMS at `det_iou_thresh` (GeoDeep also across tiles and, by
   intersection over the smaller box, once more); `det_iou_thresh` is the model's own NMS IoU.
5. Metadata values are JSON, as Deepness reads every key (json.loads) and GeoDeep the string
   ones: `model_type` "Detector", `class_names` {"0": first class, ...} (their class index is our
   label - 1), `resolution` the export's GSD in cm per pixel (Deepness resamples the map to it;
   GeoDeep only shrinks a scene by whole factors when it is at least twice finer, so give it
   scenes at the export's GSD), `tiles_size` (the documented key) and `tile_size` (the key
   Deepness' code reads), `tiles_overlap` a whole percent (Deepness reads it with int()),
   `det_conf` (the export's score threshold), `det_iou_thresh`, `det_type`.

The rows are made by ONNX nodes appended to the exported (validated, simplified, quantized)
graph, so the deepness flavour of any precision detects exactly what the default flavour does;
`check_rows` compares the two graphs on the validation tiles.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from scalemae_det.base.errors import InputError
from scalemae_det.base.metadata import FLAVOUR_KEY, INPUT_NAME, OUTPUT_NAMES, ModelMetadata

DET_TYPE = "YOLO_v5_or_v7_default"
OUTPUT_NAME = "detections"
FLAVOUR = "deepness"
ORIGIN_KEY = "scalemae_det_metadata"  # the default flavour's metadata, as one JSON object
ROW_TOLERANCE = 1e-4  # px and score: the appended nodes are the numpy reference's float32 steps


@dataclass(frozen=True)
class DeepnessMetadata:
    """The metadata Deepness and GeoDeep read (module doc, rule 5)."""

    class_names: dict[str, str]
    resolution: float  # cm per pixel
    tiles_size: int
    tiles_overlap: int  # percent
    det_conf: float
    det_iou_thresh: float
    model_type: str = "Detector"
    det_type: str = DET_TYPE

    @classmethod
    def of(cls, meta: ModelMetadata, overlap: float, iou_threshold: float) -> DeepnessMetadata:
        return cls(
            class_names={str(k): name for k, name in enumerate(meta.class_names)},
            resolution=round(meta.gsd * 100, 6),
            tiles_size=meta.tile,
            tiles_overlap=round(overlap * 100),
            det_conf=meta.score_threshold,
            det_iou_thresh=iou_threshold,
        )

    def to_props(self, origin: ModelMetadata) -> dict[str, str]:
        """The file's metadata_props: these keys, `tile_size`, the flavour and our own metadata."""
        props = {k: json.dumps(v) for k, v in asdict(self).items()}
        props["tile_size"] = props["tiles_size"]
        props[FLAVOUR_KEY] = json.dumps(FLAVOUR)
        props[ORIGIN_KEY] = json.dumps(origin.to_props())
        return props


def rows(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """The contract's padded outputs of a batch -> (B, K, 5 + classes) rows (module doc, rule 2)."""
    boxes = boxes.astype(np.float32)
    centre = (boxes[..., :2] + boxes[..., 2:]) * np.float32(0.5)
    size = boxes[..., 2:] - boxes[..., :2]
    score = scores.astype(np.float32)[..., None]
    one_hot = (labels[..., None] == np.arange(1, classes + 1)).astype(np.float32)
    return np.concatenate([centre, size, score, one_hot * score], axis=-1)


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def deepness_graph(
    model: onnx.ModelProto, meta: ModelMetadata, deepness: DeepnessMetadata
) -> onnx.ModelProto:
    """`model` (the default flavour, batch 1) with the rows of rule 2 as its one output and the
    metadata of rule 5; the nodes computing them are named /deepness/..."""
    if meta.batch != 1:
        raise ValueError(f"the deepness flavour needs a batch-1 graph, got batch {meta.batch}")
    graph, classes, k = model.graph, len(meta.class_names), meta.max_detections
    boxes, scores, labels = OUTPUT_NAMES[:3]
    p = "/deepness/"
    graph.initializer.extend(
        [
            _const(p + "zero", np.array([0], np.int64)),
            _const(p + "two", np.array([2], np.int64)),
            _const(p + "four", np.array([4], np.int64)),
            _const(p + "half", np.array(0.5, np.float32)),
            _const(p + "class_ids", np.arange(1, classes + 1, dtype=np.int64)),
        ]
    )
    node = helper.make_node
    graph.node.extend(
        [
            node("Slice", [boxes, p + "zero", p + "two", p + "two"], [p + "xy1"], p + "xy1"),
            node("Slice", [boxes, p + "two", p + "four", p + "two"], [p + "xy2"], p + "xy2"),
            node("Add", [p + "xy1", p + "xy2"], [p + "sum"], p + "sum"),
            node("Mul", [p + "sum", p + "half"], [p + "centre"], p + "centre"),
            node("Sub", [p + "xy2", p + "xy1"], [p + "size"], p + "size"),
            node("Unsqueeze", [scores, p + "two"], [p + "score"], p + "score"),
            node("Unsqueeze", [labels, p + "two"], [p + "label"], p + "label"),
            node("Equal", [p + "label", p + "class_ids"], [p + "is_class"], p + "is_class"),
            node("Cast", [p + "is_class"], [p + "one_hot"], p + "one_hot", to=TensorProto.FLOAT),
            node("Mul", [p + "one_hot", p + "score"], [p + "class_scores"], p + "class_scores"),
            node(
                "Concat",
                [p + "centre", p + "size", p + "score", p + "class_scores"],
                [OUTPUT_NAME],
                p + "rows",
                axis=2,
            ),
        ]
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, k, 5 + classes])
    )
    del model.metadata_props[:]
    helper.set_model_props(model, deepness.to_props(meta))
    model.doc_string = (
        f"scalemae-det {meta.model_config} detector for QGIS Deepness and GeoDeep "
        f"({DET_TYPE} rows) at {deepness.resolution:g} cm/px, tile {meta.tile}"
    )
    return model


def check_rows(default: Path, rewritten: Path, tiles: np.ndarray, classes: int) -> float:
    """The largest difference between the rewritten graph's rows and `rows` of the default
    flavour's outputs, over `tiles`; InputError when it exceeds ROW_TOLERANCE."""
    import onnxruntime as ort

    def session(path: Path):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    before, after = session(default), session(rewritten)
    worst = 0.0
    for tile in tiles:
        feed = {INPUT_NAME: np.ascontiguousarray(tile[None], np.float32)}
        boxes, scores, labels, _ = before.run(list(OUTPUT_NAMES), feed)
        (got,) = after.run([OUTPUT_NAME], feed)
        worst = max(worst, float(np.abs(got - rows(boxes, scores, labels, classes)).max()))
    if not worst <= ROW_TOLERANCE:
        raise InputError(
            f"{rewritten}: the Deepness rows differ from the model's detections by {worst:g} "
            f"(tolerance {ROW_TOLERANCE}); nothing written"
        )
    return worst


def write_deepness(
    default: Path,
    out: Path,
    meta: ModelMetadata,
    deepness: DeepnessMetadata,
    tiles: np.ndarray | None,
) -> Path:
    """Write the deepness flavour of the graph `default` to `out` (a work file); check it against
    `default` on `tiles` unless None."""
    model = deepness_graph(onnx.load(str(default)), meta, deepness)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    if tiles is not None:
        check_rows(default, out, tiles, len(meta.class_names))
    return out
