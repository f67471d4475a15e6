"""A contract-following ONNX stand-in detector, so the runtime can be tested exactly.

The graph finds bright squares: a pixel whose grey value is over 0.5 while its left and upper
neighbours are not is an object's upper-left corner; the box runs from there over the bright pixels
to the right and below (up to RUN pixels), so an object cut by a tile edge gets the box of its
visible part, as a real detector's would. Boxes are scored by the corner's grey value and labelled
2 when blue outweighs red there, else 1. A blank tile gives no detection. Inputs, outputs and
metadata follow base/metadata.py exactly.

`scene_with_squares` writes GeoTIFFs holding such squares, so every expected box is known.
Shared by the tests and the benchmarks (bench/bench_predict.py), so it lives in the package;
tests/runtime/test_standin.py checks the graph against its numpy rule. Needs onnx (the `train`
extra) to build the graph; running it needs only the runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import rasterio
from onnx import TensorProto, helper, numpy_helper
from rasterio.transform import from_origin

from scalemae_det.base.metadata import INPUT_NAME, ModelMetadata

SIZE = 12  # side of the test objects, in model pixels
RUN = 24  # longest side the stand-in measures
CLASSES = ["red thing", "blue thing"]


def metadata(**overrides) -> ModelMetadata:
    values = dict(
        class_names=CLASSES,
        gsd=1.0,
        res_per_metre=1.0,
        tile=64,
        batch=4,
        max_detections=16,
        score_threshold=0.3,
        model_config="standin",
        source_sha256="0" * 64,
        scalemae_det_version="0.1.0",
        opset=18,
    )
    values.update(overrides)
    return ModelMetadata(**values)


def _runs(n, out: str, axis: int) -> list:
    """Nodes computing, per pixel, how many bright pixels follow in a row along `axis` (up to RUN):
    the sum over k of the product of bright(x), bright(x + 1), ..., bright(x + k)."""
    nodes, prod, acc = [], "bright", "bright"
    for k in range(1, RUN):
        s = f"{out}_s{k}"  # bright(x + k): pad k zeros at the end, then slice k .. k + tile
        nodes += [
            n("Pad", ["bright", f"pad{axis}_{k}"], [f"{s}_p"]),
            n("Slice", [f"{s}_p", f"k{k}", f"end{k}", f"ax{axis}"], [s]),
            n("Mul", [prod, s], [f"{out}_p{k}"]),
            n("Add", [acc, f"{out}_p{k}"], [f"{out}_a{k}"]),
        ]
        prod, acc = f"{out}_p{k}", f"{out}_a{k}"
    return nodes + [n("Identity", [acc], [out])]


def build_model(
    path: Path,
    meta: ModelMetadata | None = None,
    fixed_batch: bool = False,
    with_metadata: bool = True,
) -> Path:
    meta = meta or metadata()
    t, k = meta.tile, meta.max_detections
    batch = meta.batch if fixed_batch else "B"

    def const(name, value, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(value, dtype), name)

    inits = [
        const("half", 0.5),
        const("one", 1.0),
        const("zero", 0.0),
        const("tile_i", t, np.int64),
        const("flat", [0, -1], np.int64),
        const("k", [k], np.int64),
        const("ch_axis", [1], np.int64),
        const("pad_left", [0, 0, 0, 1, 0, 0, 0, 0], np.int64),
        const("pad_top", [0, 0, 1, 0, 0, 0, 0, 0], np.int64),
        const("s0", [0], np.int64),
        const("st", [t], np.int64),
        const("ax2", [2], np.int64),
        const("ax3", [3], np.int64),
        const("last", [-1], np.int64),
        const("r", [0], np.int64),
        const("b", [2], np.int64),
        const("e1", [1], np.int64),
        const("e3", [3], np.int64),
        *[const(f"k{k}", [k], np.int64) for k in range(1, RUN)],
        *[const(f"end{k}", [k + t], np.int64) for k in range(1, RUN)],
        *[
            const(f"pad{axis}_{k}", [0, 0, 0, 0, 0, 0, k * (axis == 2), k * (axis == 3)], np.int64)
            for axis in (2, 3)
            for k in range(1, RUN)
        ],
    ]
    n = helper.make_node
    nodes = [
        n("ReduceMean", ["images", "ch_axis"], ["grey"], keepdims=1),
        n("Greater", ["grey", "half"], ["bright_b"]),
        n("Cast", ["bright_b"], ["bright"], to=TensorProto.FLOAT),
        n("Pad", ["bright", "pad_left"], ["pl"]),
        n("Slice", ["pl", "s0", "st", "ax3"], ["left"]),
        n("Pad", ["bright", "pad_top"], ["pt"]),
        n("Slice", ["pt", "s0", "st", "ax2"], ["up"]),
        n("Sub", ["one", "left"], ["not_left"]),
        n("Sub", ["one", "up"], ["not_up"]),
        n("Mul", ["bright", "not_left"], ["c1"]),
        n("Mul", ["c1", "not_up"], ["corner"]),
        n("Mul", ["corner", "grey"], ["score_map"]),
        n("Reshape", ["score_map", "flat"], ["score_flat"]),
        n("TopK", ["score_flat", "k"], ["top", "idx"], axis=1),
        n("Greater", ["top", "zero"], ["valid_b"]),
        n("Cast", ["valid_b"], ["valid"], to=TensorProto.FLOAT),
        n("Mul", ["top", "valid"], ["scores"]),
        n("Div", ["idx", "tile_i"], ["row"]),
        n("Mod", ["idx", "tile_i"], ["col"]),
        n("Cast", ["col"], ["x1"], to=TensorProto.FLOAT),
        n("Cast", ["row"], ["y1"], to=TensorProto.FLOAT),
        *_runs(n, "run_x", 3),
        *_runs(n, "run_y", 2),
        n("Reshape", ["run_x", "flat"], ["run_x_flat"]),
        n("GatherElements", ["run_x_flat", "idx"], ["w"], axis=1),
        n("Reshape", ["run_y", "flat"], ["run_y_flat"]),
        n("GatherElements", ["run_y_flat", "idx"], ["h"], axis=1),
        n("Add", ["x1", "w"], ["x2"]),
        n("Add", ["y1", "h"], ["y2"]),
        *[n("Unsqueeze", [v, "last"], [f"{v}_u"]) for v in ("x1", "y1", "x2", "y2", "valid")],
        n("Concat", ["x1_u", "y1_u", "x2_u", "y2_u"], ["raw_boxes"], axis=2),
        n("Mul", ["raw_boxes", "valid_u"], ["boxes"]),
        # label: 2 where blue > red at the corner, else 1
        n("Slice", ["images", "r", "e1", "ch_axis"], ["red"]),
        n("Slice", ["images", "b", "e3", "ch_axis"], ["blue"]),
        n("Greater", ["blue", "red"], ["blue_b"]),
        n("Cast", ["blue_b"], ["blue_i"], to=TensorProto.INT64),
        n("Reshape", ["blue_i", "flat"], ["blue_flat"]),
        n("GatherElements", ["blue_flat", "idx"], ["blue_at"], axis=1),
        n("Cast", ["valid_b"], ["valid_i"], to=TensorProto.INT64),
        n("Add", ["blue_at", "valid_i"], ["lab"]),
        n("Mul", ["lab", "valid_i"], ["labels"]),
        n("ReduceSum", ["valid_i", "ch_axis"], ["num_detections"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "standin",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, 3, t, t])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, k, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, k]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, k]),
            helper.make_tensor_value_info("num_detections", TensorProto.INT64, [batch]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", meta.opset)])
    model.ir_version = 8
    if with_metadata:
        helper.set_model_props(model, meta.to_props())
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def reference(images: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The stand-in's rule in numpy, per image: (boxes, scores, labels)."""
    out = []
    t = images.shape[-1]
    for img in images:
        grey = img.mean(0)
        bright = grey > 0.5
        left = np.pad(bright, ((0, 0), (1, 0)))[:, :t]
        up = np.pad(bright, ((1, 0), (0, 0)))[:t]
        rows, cols = np.nonzero(bright & ~left & ~up)
        scores = grey[rows, cols]
        order = np.lexsort((rows * t + cols, -scores))[:k]
        rows, cols, scores = rows[order], cols[order], scores[order]
        w = [np.argmin(np.append(bright[r, c : c + RUN], False)) for r, c in zip(rows, cols)]
        h = [np.argmin(np.append(bright[r : r + RUN, c], False)) for r, c in zip(rows, cols)]
        boxes = np.stack([cols, rows, cols + w, rows + h], 1).astype(np.float32)
        labels = np.where(img[2, rows, cols] > img[0, rows, cols], 2, 1)
        out.append((boxes.reshape(-1, 4), scores.astype(np.float32), labels))
    return out


def scene_with_squares(
    path: Path,
    width: int,
    height: int,
    corners: list[tuple[int, int]],
    size: int = SIZE,
    blue: set[int] = frozenset(),
    crs: str | None = "EPSG:32631",
    res: float = 1.0,
    transform=None,
    nodata: int | None = None,
    value: int = 230,
    background: int = 20,
) -> Path:
    """A uint8 RGB GeoTIFF: dark background, bright squares with upper-left corners at `corners`
    (col, row); squares whose index is in `blue` are bluish (label 2), the rest reddish (label
    1)."""
    data = np.full((3, height, width), background, np.uint8)
    for i, (c, r) in enumerate(corners):
        colour = (value - 40, value, value + 20) if i in blue else (value + 20, value, value - 40)
        for band, v in enumerate(colour):
            data[band, r : r + size, c : c + size] = v
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=64,
        blockysize=64,
        crs=crs,
        nodata=nodata,
        transform=transform or from_origin(500_000, 4_000_000, res, res),
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path
