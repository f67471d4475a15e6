"""The deepness flavour: GeoDeep itself runs it and finds what predict finds; Deepness' contract.

GeoDeep is the independent reference: its own session, tiling, pre-processing, NMS and class names
(geodeep 0.9.13, installed with `pip install --no-deps geodeep==0.9.13`; the test skips without
it). The scene is at the export's GSD, so GeoDeep does not resample it (geodeep.py: only a scene
at least twice finer is shrunk), and both tile it with 25% overlap, which on 128-px tiles is the
same 96-px stride for both (our round(128 * 0.75), GeoDeep's 128 - floor(128 * 0.25)).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import rasterio
from rasterio.transform import from_origin

from helpers.tiny import TINY_CLASSES, TINY_GSD, TINY_TILE
from scalemae_det.base.errors import ParameterError, UserError
from scalemae_det.base.metadata import MetadataError
from scalemae_det.demo import BUNDLED
from scalemae_det.export.onnx_export import export_onnx
from scalemae_det.export.options import ExportSpec
from scalemae_det.export.parity import validation_tiles
from scalemae_det.export.torchscript_export import export_torchscript
from scalemae_det.models.weights import load_detector
from scalemae_det.runtime import Detector
from scalemae_det.runtime.session import Session
from scalemae_det.synthetic import write_scene

OVERLAP = 0.25
SIDE = 352  # 4 x 4 tiles of 128 px at a 96-px stride, the last row and column flush with the edge
OBJECTS = 40
# Deepness' detector types (src/deepness/common/processing_parameters/detection_parameters.py)
DEEPNESS_DET_TYPES = {
    "YOLO_v5_or_v7_default",
    "YOLO_v6",
    "YOLO_v9",
    "YOLO_Ultralytics",
    "YOLO_Ultralytics_segmentation",
    "YOLO_Ultralytics_obb",
}


def _scene(path, seed=1):
    """uint8 RGB at the export's GSD in UTM 31N: OBJECTS rectangles of random colours on dark
    ground, some across tile seams."""
    rng = np.random.default_rng(seed)
    data = np.zeros((3, SIDE, SIDE), np.uint8)
    for _ in range(OBJECTS):
        h, w = rng.integers(6, 22, size=2)
        y, x = rng.integers(0, SIDE - h), rng.integers(0, SIDE - w)
        data[:, y : y + h, x : x + w] = rng.integers(0, 256, (3, 1, 1))
    profile = dict(driver="GTiff", width=SIDE, height=SIDE, count=3, dtype="uint8")
    profile |= dict(crs="EPSG:32631", transform=from_origin(500_000, 4_000_000, TINY_GSD, TINY_GSD))
    with rasterio.open(path, "w", tiled=True, blockxsize=128, blockysize=128, **profile) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return _scene(tmp_path_factory.mktemp("scene") / "scene.tif")


@pytest.fixture(scope="module")
def deepness(tiny_export):
    return tiny_export("onnx", batch=1, flavour="deepness", overlap=OVERLAP)


@pytest.fixture(scope="module")
def native(tiny_export):
    return tiny_export("onnx", batch=1)  # the export test's batch-1 graph


def _iou(box, boxes):
    lo, hi = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def test_geodeep_runs_the_export_and_finds_what_predict_finds(deepness, native, scene, capsys):
    geodeep = pytest.importorskip(
        "geodeep", reason="GeoDeep is installed apart: pip install --no-deps geodeep==0.9.13"
    )
    from geodeep.inference import create_session

    _, config = create_session(str(deepness.path))
    assert (config["model_type"], config["det_type"]) == ("Detector", "YOLO_v5_or_v7_default")
    assert config["resolution"] == TINY_GSD * 100 and config["tiles_overlap"] == OVERLAP * 100
    assert config["input_shape"] == [1, 3, TINY_TILE, TINY_TILE]

    ours = Detector(native.path, "cpu").detect_scene(scene, overlap=OVERLAP).detections
    confident = np.flatnonzero(ours.scores >= 0.5)
    boxes, scores, classes = geodeep.run(str(scene), str(deepness.path))
    theirs = np.asarray(boxes, np.float64).reshape(-1, 4)
    names = np.asarray([name for _, name in classes])
    assert set(names) <= set(TINY_CLASSES)
    found = same_score = 0
    free = np.ones(len(theirs), bool)
    for i in confident[np.argsort(-ours.scores[confident])]:  # greedy, best score first
        candidates = free & (names == TINY_CLASSES[ours.labels[i] - 1])
        iou = np.full(len(theirs), -1.0)
        iou[candidates] = _iou(ours.boxes[i], theirs[candidates])
        j = int(np.argmax(iou)) if len(iou) else 0
        if len(iou) and iou[j] >= 0.5:
            found += 1
            free[j] = False
            same_score += abs(scores[j] - ours.scores[i]) < 1e-4
    agreement = found / len(confident)
    with capsys.disabled():
        print(
            f"\nGeoDeep found {found} of our {len(confident)} detections scoring >= 0.5 "
            f"(IoU >= 0.5, same class): {agreement:.3f}; {same_score} with our score; "
            f"GeoDeep {len(theirs)} detections"
        )
    assert len(confident) >= 20
    assert agreement >= 0.9
    assert same_score >= 0.9 * found  # the scores GeoDeep thresholds and reports are ours


def test_metadata_and_io_as_deepness_reads_them(deepness, tiny_checkpoint):
    model = onnx.load(str(deepness.path))
    props = {p.key: p.value for p in model.metadata_props}
    parsed = {k: json.loads(v) for k, v in props.items()}  # Deepness json.loads every key
    assert parsed["model_type"] == "Detector" and parsed["det_type"] in DEEPNESS_DET_TYPES
    names = [n for _, n in sorted(parsed["class_names"].items(), key=lambda kv: int(kv[0]))]
    assert names == TINY_CLASSES
    assert parsed["resolution"] == pytest.approx(TINY_GSD * 100)  # cm per pixel
    assert parsed["tiles_size"] == parsed["tile_size"] == TINY_TILE
    assert parsed["tiles_overlap"] == int(parsed["tiles_overlap"]) == 25
    model_cfg = load_detector(tiny_checkpoint)[1]["config"]
    assert parsed["det_conf"] == model_cfg["score_thresh"]
    assert parsed["det_iou_thresh"] == model_cfg["nms_thresh"]
    assert not {"standardization_mean", "standardization_std"} & set(props)  # normalised inside
    session = ort.InferenceSession(str(deepness.path), providers=["CPUExecutionProvider"])
    (image,), outputs = session.get_inputs(), session.get_outputs()
    assert image.shape == [1, 3, TINY_TILE, TINY_TILE]
    k = deepness.metadata.max_detections
    assert len(outputs) == 1 and outputs[0].shape == [1, k, 5 + len(TINY_CLASSES)]


def test_rows_are_the_native_detections_as_cxcywh_score_and_class_scores(deepness, native):
    """By hand from the native graph's outputs, on the export's validation tiles."""
    rows_of = ort.InferenceSession(str(deepness.path), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(native.path), providers=["CPUExecutionProvider"])
    counted = 0
    for tile in validation_tiles(TINY_TILE, 3):
        feed = {"images": tile[None]}
        (rows,) = rows_of.run(None, feed)
        boxes, scores, labels, count = plain.run(None, feed)
        n = int(count[0])
        counted += n
        for r in range(rows.shape[1]):
            row = rows[0, r]
            if r >= n:
                assert not row.any()
                continue
            x1, y1, x2, y2 = boxes[0, r]
            want = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, scores[0, r]]
            np.testing.assert_allclose(row[:5], want, atol=1e-4)
            assert row[5 + labels[0, r] - 1] == row[4] and np.count_nonzero(row[5:]) == 1
    assert counted >= 10


def test_our_runtime_refuses_it_naming_the_flavour(deepness):
    with pytest.raises(MetadataError, match='flavour "deepness".*Deepness and GeoDeep'):
        Session(deepness.path, "cpu")


def test_bad_inputs_are_refused_before_any_work(tiny_checkpoint, tmp_path):
    spec = ExportSpec(tile=TINY_TILE, flavour="deepness")
    with pytest.raises(ParameterError, match="batch 1") as batch:
        export_onnx(tiny_checkpoint, tmp_path / "m.onnx", replace(spec, batch=4))
    assert batch.value.param == "batch"
    with pytest.raises(ParameterError, match="ONNX") as torchscript:
        export_torchscript(tiny_checkpoint, tmp_path / "m.pt", spec)
    assert torchscript.value.param == "flavour"
    with pytest.raises(ParameterError, match=".onnx suffix"):
        export_onnx(tiny_checkpoint, tmp_path / "m.pt", spec)
    with pytest.raises(ParameterError, match="whole percent"):
        ExportSpec(flavour="deepness", overlap=0.125).check()
    with pytest.raises(ParameterError, match="only used with flavour deepness"):
        ExportSpec(overlap=0.25).check()
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        export_onnx(tiny_checkpoint, tmp_path / "file" / "m.onnx", spec)
    with pytest.raises(UserError, match="does not exist"):
        export_onnx(tiny_checkpoint, tmp_path / "missing" / "m.onnx", spec)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # nothing written


def test_int8_is_supported_and_keeps_the_layout(tmp_path):
    """int8 (calibrated and gated as usual, here on the bundled trained model, which detects), then
    the rows: still the layout Deepness parses, with Q/DQ nodes."""
    scene = tmp_path / "calibration.tif"
    write_scene(scene, 1024, seed=31, gsd=0.5)
    out = tmp_path / "int8.onnx"
    spec = ExportSpec(gsd=0.5, tile=256, flavour="deepness", precision="int8", simplify=False)
    result = export_onnx(
        BUNDLED,
        out,
        # a lower bar than the default: the gate's figures on 8 tiles are test_quantize's subject
        replace(spec, calibration=(str(scene),), calibration_tiles=8, int8_min_agreement=0.8),
    )
    model = onnx.load(str(out))
    assert result.metadata.precision == "int8" and result.deepness.det_type in DEEPNESS_DET_TYPES
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (output,) = session.get_outputs()
    classes = len(result.metadata.class_names)
    assert output.shape == [1, result.metadata.max_detections, 5 + classes]
