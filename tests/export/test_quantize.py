"""int8 export: calibrated on a generated scene, the bundled model passes the accuracy gate and
keeps its AP50 on another scene; calibrated on nonsense it is refused and nothing is written.

References: AP50 is pycocotools' (scalemae_det.metrics.coco_ap, run by
export.agreement.runtime_ap50) over the scene's own ground truth, computed for a float32 export of
the same checkpoint; metadata is compared with the onnx library's reading.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
import rasterio
from affine import Affine

from scalemae_det.base.errors import UserError
from scalemae_det.base.metadata import ModelMetadata, read_props
from scalemae_det.demo import BUNDLED
from scalemae_det.export.agreement import runtime_ap50
from scalemae_det.export.onnx_export import export_onnx, onnx_runner, table_path
from scalemae_det.export.options import ExportSpec
from scalemae_det.export.parity import report_path
from scalemae_det.synthetic import write_scene

GSD, TILE, BATCH = 0.5, 256, 2
SPEC = dict(gsd=GSD, tile=TILE, batch=BATCH, simplify=False)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8_scenes")
    write_scene(root / "calibration.tif", 1792, seed=31, gsd=GSD, nodata_collar=True)
    write_scene(root / "test.tif", 1024, seed=32, gsd=GSD)
    return root


@pytest.fixture(scope="module")
def float32(scenes, tmp_path_factory):
    return export_onnx(
        BUNDLED, tmp_path_factory.mktemp("fp32") / "fp32.onnx", ExportSpec(**SPEC, validate=False)
    )


@pytest.fixture(scope="module")
def int8(scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "int8.onnx"
    spec = ExportSpec(
        **SPEC,
        precision="int8",
        calibration=(str(scenes / "calibration.tif"),),
        calibration_tiles=24,
        int8_labels=str(scenes / "test.json"),
        int8_images=str(scenes),
    )
    return export_onnx(BUNDLED, out, spec)


def test_int8_export_passes_the_gate_and_keeps_ap50(int8, float32, scenes):
    report = json.loads(report_path(int8.path).read_text())
    assert report["passed"] and report["precision"] == "int8"
    assert report["agreement_precision"] >= 0.95 and report["agreement_recall"] >= 0.95
    assert (
        report["reference_detections"] > 20 and report["tiles"] == 6
    )  # a quarter of 24, whole batches: enough held-out detections for a 0.95 bar to mean much
    assert (
        report["calibration"]["tiles_left_out_nodata"] > 0
    )  # the collar's tiles were not calibrated on
    assert report["float32_parity"]["passed"]
    ap50_float32 = runtime_ap50(float32.path, scenes / "test.json", scenes)
    assert (
        ap50_float32 > 0.8
    )  # the bundled model detects on this scene, so the comparison means something
    assert abs(report["ap50"]["int8"] - ap50_float32) <= 0.02
    assert report["ap50"]["float32"] == pytest.approx(ap50_float32, abs=1e-9)


def test_int8_graph_and_metadata(int8, float32):
    model = onnx.load(str(int8.path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    props = {p.key: p.value for p in model.metadata_props}
    assert read_props(int8.path) == props  # the runtime's reader agrees with onnx's
    meta = ModelMetadata.from_props(props)
    assert meta.precision == "int8" and meta.calibration_table == table_path(int8.path).name
    assert table_path(int8.path).stat().st_size > 1000
    assert int8.size_bytes < 0.5 * float32.size_bytes  # weights stored as int8


def test_gate_catches_a_model_calibrated_on_constant_tiles(float32, scenes, tmp_path):
    """The agreement figures themselves: quantized with ranges from constant tiles, judged on real
    ones."""
    from scalemae_det.export.agreement import agreement
    from scalemae_det.export.calibration import read_tiles
    from scalemae_det.export.quantize import quantize_int8

    meta = float32.metadata
    held_out = read_tiles([scenes / "test.tif"], meta, 0, 4).held_out
    constant = [np.full((BATCH, 3, TILE, TILE), 0.5, np.float32)] * 2
    bad = quantize_int8(float32.path, tmp_path / "bad.onnx", constant, tmp_path)
    reference, _ = onnx_runner(float32.path)[0](held_out)
    got, _ = onnx_runner(bad.path)[0](held_out)
    precision, recall, counted, _ = agreement(reference, got, meta.score_threshold)
    assert counted > 20 and min(precision, recall) < 0.95


def constant_scene(path):
    profile = dict(
        driver="GTiff",
        width=512,
        height=512,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=Affine(GSD, 0, 500000, 0, -GSD, 5000000),
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.full((3, 512, 512), 128, np.uint8))


def test_int8_calibrated_on_nonsense_is_refused_and_nothing_written(tmp_path):
    constant_scene(tmp_path / "grey.tif")
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    spec = ExportSpec(
        **SPEC,
        precision="int8",
        calibration=(str(tmp_path / "grey.tif"),),
        calibration_tiles=2,
        validate=False,
    )
    with pytest.raises(UserError, match="int8 accuracy gate FAILED.*nothing written"):
        export_onnx(BUNDLED, out, spec)
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    "args, words",
    [
        (["--precision", "int8"], ["--precision int8 needs --calibration"]),
        (["--calibration", "x.tif"], ["--calibration is only used with --precision int8"]),
        (["--precision", "int4"], ["--precision int4"]),
        (
            ["--precision", "int8", "--calibration", "nowhere.tif"],
            ["--calibration nowhere.tif: no such file"],
        ),
        (
            ["--precision", "int8", "--calibration", "{scene}", "--int8-min-agreement", "1.5"],
            ["--int8-min-agreement 1.5"],
        ),
        (
            ["--precision", "int8", "--calibration", "{scene}", "--int8-labels", "l.json"],
            ["--int8-labels and --int8-images"],
        ),
        (
            ["--precision", "int8", "--calibration", "{scene}", "--format", "torchscript"],
            ["--precision int8", "ONNX"],
        ),
        (
            ["--precision", "int8", "--calibration", "{scene}", "--format", "all"],
            ["--precision int8", "ONNX"],
        ),  # no .onnx first
    ],
)
def test_bad_int8_options_are_one_line_before_any_work(args, words, tmp_path, monkeypatch, capsys):
    from scalemae_det.cli import main

    constant_scene(tmp_path / "grey.tif")
    out = tmp_path / "out"
    out.mkdir()
    args = [a.replace("{scene}", str(tmp_path / "grey.tif")) for a in args]
    monkeypatch.setattr(
        sys, "argv", ["scalemae-det", "export", str(BUNDLED), "--out", str(out / "m.onnx"), *args]
    )
    with pytest.raises(SystemExit) as exc:
        main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(w in lines[0] for w in words), lines[0]
    assert list(out.iterdir()) == []


def test_tensorrt_gets_int8_only_for_int8_models():
    from scalemae_det.runtime.session import NAMES, provider_options

    assert provider_options(NAMES["tensorrt"], "int8")["trt_int8_enable"] is True
    assert "trt_int8_enable" not in provider_options(NAMES["tensorrt"], "float32")
    assert "trt_int8_calibration_table_name" not in provider_options(
        NAMES["tensorrt"], "int8"
    )  # QDQ: no table


def test_fp16_flag_is_a_deprecated_alias(tmp_path, monkeypatch, capsys):
    from scalemae_det.cli import main

    out = tmp_path / "m.onnx"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "scalemae-det",
            "export",
            str(BUNDLED),
            "--out",
            str(out),
            "--tile",
            "64",
            "--batch",
            "1",
            "--fp16",
            "--no-validate",
            "--no-simplify",
        ],
    )
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 0
    assert "warning: --fp16 is deprecated; use --precision fp16" in capsys.readouterr().err
    assert ModelMetadata.from_file(out).precision == "float16"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "scalemae-det",
            "export",
            str(BUNDLED),
            "--out",
            str(tmp_path / "n.onnx"),
            "--fp16",
            "--precision",
            "int8",
        ],
    )
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1 and "--fp16 and --precision int8 disagree" in capsys.readouterr().err


def test_calibration_tiles_leave_out_nodata_and_match_the_runtime_reading(tmp_path):
    """Tiles come from the runtime's reader (independent check: rasterio's own read of the same
    window)
    and a tile that is mostly nodata, or a scene of nothing but nodata, gives no tile."""
    from scalemae_det.export.calibration import read_tiles

    profile = dict(
        driver="GTiff",
        width=512,
        height=256,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        nodata=0,
        transform=Affine(GSD, 0, 500000, 0, -GSD, 5000000),
    )
    data = np.random.default_rng(0).integers(1, 255, (3, 256, 512), dtype=np.uint8)
    data[:, :, 256:] = 0  # the right tile is all nodata
    data[:, :200, :256] = 0  # the left one has data in its bottom 56 rows only: mostly nodata
    with rasterio.open(tmp_path / "a.tif", "w", **profile) as ds:
        ds.write(data)
    data[:, :200, :256] = 7  # now the left tile has data
    with rasterio.open(tmp_path / "b.tif", "w", **profile) as ds:
        ds.write(data)
    meta = ModelMetadata(
        class_names=["x"],
        gsd=GSD,
        res_per_metre=1.0,
        tile=TILE,
        batch=1,
        max_detections=10,
        score_threshold=0.5,
        model_config="t",
        source_sha256="",
        scalemae_det_version="",
        opset=17,
    )
    with rasterio.open(tmp_path / "empty.tif", "w", **profile) as ds:
        ds.write(np.zeros_like(data))
    for scene in ("a.tif", "empty.tif"):
        with pytest.raises(UserError, match="give 0 tiles"):
            read_tiles([tmp_path / scene], meta, 1, 0)
    tiles = read_tiles(
        [tmp_path], meta, 1, 0
    )  # the folder: a.tif and empty.tif give nothing, b.tif its left tile
    assert tiles.skipped_nodata == 5 and tiles.candidates == 6
    np.testing.assert_array_equal(tiles.calibration[0], data[:, :, :256].astype(np.float32) / 255)
