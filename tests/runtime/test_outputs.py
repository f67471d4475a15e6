"""Output files: georeferencing checked against rasterio's own transforms, COCO against
pycocotools."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import xy
from rasterio.warp import transform as warp

from helpers import commands
from helpers.realdata import ORIGINS, raster
from scalemae_det.runtime import Detections, Detector
from scalemae_det.runtime.outputs import geojson, image_id, write
from scalemae_det.runtime.preview import PALETTE, write_preview
from scalemae_det.synthetic.standin import SIZE, build_model, scene_with_squares


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    return Detector(build_model(tmp_path_factory.mktemp("model") / "standin.onnx"), "cpu")


def _expected_corners(transform, box, crs=None):
    """Box corners (x1,y1), (x1,y2), (x2,y2), (x2,y1) by rasterio: pixel edges, then reprojected."""
    x1, y1, x2, y2 = box
    xs, ys = xy(transform, [y1, y2, y2, y1], [x1, x1, x2, x2], offset="ul")
    if crs is not None:
        xs, ys = warp(crs, "EPSG:4326", xs, ys)
    return np.stack([xs, ys], 1)


def _check_ring(ring, expected, atol):
    ring = np.asarray(ring)
    assert len(ring) == 5 and (ring[0] == ring[-1]).all()
    alternatives = (expected, expected[[0, 3, 2, 1]])  # either way round from the first corner
    assert any(np.allclose(ring[:4], e, rtol=0, atol=atol) for e in alternatives)
    x, y = ring[:, 0], ring[:, 1]
    assert np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) > 0  # counter-clockwise (RFC 7946)


@pytest.mark.parametrize("crs_mode", ["wgs84", "native"])
@pytest.mark.parametrize("origin", ORIGINS)
def test_rgb_byte_geometry_is_rasterios_transform_of_the_pixel_bbox(
    tmp_path, detector, origin, crs_mode
):
    scene = raster("RGB.byte.tif", origin, tmp_path)
    result = detector.detect_scene(scene, gsd_mode="as-is")
    assert len(result.detections) > 100
    path = write(result, tmp_path / "out.geojson", "geojson", crs_mode)
    doc = json.loads(path.read_text())
    with rasterio.open(scene) as ds:
        transform, crs = ds.transform, ds.crs
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(result.detections)
    if crs_mode == "native":
        assert doc["crs"] == {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32618"}}
    else:
        assert "crs" not in doc
    for feature, box, score in zip(
        doc["features"], result.detections.boxes, result.detections.scores
    ):
        props = feature["properties"]
        assert props["pixel_bbox"] == box.tolist() and props["score"] == pytest.approx(float(score))
        assert (
            props["scene"] == "RGB.byte.tif"
            and props["label"] == ["red thing", "blue thing"][props["class_id"] - 1]
        )
        expected = _expected_corners(
            transform, props["pixel_bbox"], crs if crs_mode == "wgs84" else None
        )
        _check_ring(
            feature["geometry"]["coordinates"][0],
            expected,
            atol=1e-9 if crs_mode == "wgs84" else 1e-6,
        )
    first = doc["features"][0]["geometry"]["coordinates"][0][0]
    if crs_mode == "wgs84":  # lon, lat order, in the scene's part of the world (UTM 18N)
        assert -80 < first[0] < -72 and 20 < first[1] < 30


def test_rotated_transform_gives_parallelograms(tmp_path, detector):
    transform = Affine.translation(500_000, 4_000_000) * Affine.rotation(30) * Affine.scale(1, -1)
    path = scene_with_squares(
        tmp_path / "rot.tif", 150, 100, [(20, 30), (90, 50)], transform=transform
    )
    result = detector.detect_scene(path)
    assert result.scene.gsd == pytest.approx(1.0, rel=2e-3)  # UTM grid distance ~ ground distance
    assert result.detections.boxes.tolist() == [
        [20, 30, 20 + SIZE, 30 + SIZE],
        [90, 50, 90 + SIZE, 50 + SIZE],
    ]
    for crs_mode, crs, atol in (("native", None, 1e-6), ("wgs84", result.scene.crs, 1e-9)):
        doc = geojson(result, crs_mode)
        for feature in doc["features"]:
            expected = _expected_corners(transform, feature["properties"]["pixel_bbox"], crs)
            _check_ring(feature["geometry"]["coordinates"][0], expected, atol)


def test_ungeoreferenced_scene_keeps_pixel_coordinates(tmp_path, detector):
    path = scene_with_squares(tmp_path / "bare.tif", 100, 80, [(10, 20)], crs=None)
    doc = geojson(detector.detect_scene(path), "wgs84")
    assert doc["pixel_coordinates"] is True and "crs" not in doc
    ring = np.array(doc["features"][0]["geometry"]["coordinates"][0])
    assert {tuple(p) for p in ring} == {(10, 20), (10, 32), (22, 32), (22, 20)}


def test_coco_results_score_perfectly_with_pycocotools(tmp_path, detector):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    corners = [(5, 5), (58, 20), (48, 70), (100, 100), (150, 30), (60, 57), (170, 120)]
    path = scene_with_squares(tmp_path / "7.tif", 200, 160, corners, blue={1, 4})
    result = detector.detect_scene(path)
    out = write(result, tmp_path / "7.json", "coco")
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 7, "width": 200, "height": 160, "file_name": "7.tif"}],
        "categories": [{"id": 1, "name": "red thing"}, {"id": 2, "name": "blue thing"}],
        "annotations": [
            {
                "id": k + 1,
                "image_id": 7,
                "category_id": 2 if k in (1, 4) else 1,
                "iscrowd": 0,
                "bbox": [c, r, SIZE, SIZE],
                "area": SIZE * SIZE,
            }
            for k, (c, r) in enumerate(corners)
        ],
    }
    gt.createIndex()
    evaluation = COCOeval(gt, gt.loadRes(str(out)), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)
    assert image_id("scenes/7.tif") == 7 and image_id("a/b.tif") == "b.tif"


def test_csv_rows_and_centres(tmp_path, detector):
    path = scene_with_squares(tmp_path / "c.tif", 120, 90, [(10, 20), (70, 40)], blue={1})
    result = detector.detect_scene(path)
    rows = list(csv.DictReader(open(write(result, tmp_path / "c.csv", "csv", "wgs84"))))
    assert sorted(r["label"] for r in rows) == ["blue thing", "red thing"]
    for row in rows:
        x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
        lon, lat = warp(
            result.scene.crs,
            "EPSG:4326",
            *xy(result.scene.transform, [(y1 + y2) / 2], [(x1 + x2) / 2], offset="ul"),
        )
        assert float(row["center_x"]) == pytest.approx(lon[0], abs=1e-9)
        assert float(row["center_y"]) == pytest.approx(lat[0], abs=1e-9)


def test_preview_png_outlines_boxes_in_class_colours(tmp_path, detector):
    path = scene_with_squares(tmp_path / "p.tif", 300, 150, [(20, 30), (200, 100)], blue={1})
    result = detector.detect_scene(path)
    write_preview(result, tmp_path / "p.png")
    with rasterio.open(tmp_path / "p.png") as png:
        assert png.driver == "PNG" and (png.width, png.height) == (300, 150)
        image = png.read()
    for (x1, y1, x2, y2), label in zip(
        result.detections.boxes.astype(int), result.detections.labels
    ):
        np.testing.assert_array_equal(image[:, y1, x1], PALETTE[label - 1])
        np.testing.assert_array_equal(image[:, (y1 + y2) // 2, x2], PALETTE[label - 1])
    assert list(tmp_path.glob(".*")) == []  # nothing left beside it
    big = scene_with_squares(tmp_path / "big.tif", 2500, 1200, [(20, 30)])
    write_preview(detector.detect_scene(big), tmp_path / "big.png")
    with rasterio.open(tmp_path / "big.png") as png:
        assert (png.width, png.height) == (1024, round(1200 / (2500 / 1024)))


@pytest.mark.parametrize("origin", ORIGINS)
def test_geojson_reads_back_with_a_gis_library(tmp_path, detector, origin):
    gpd = pytest.importorskip(
        "geopandas", reason="geopandas is not installed; the JSON itself is checked above"
    )
    result = detector.detect_scene(raster("RGB.byte.tif", origin, tmp_path), gsd_mode="as-is")
    frame = gpd.read_file(write(result, tmp_path / "x.geojson", "geojson", "wgs84"))
    assert len(frame) == len(result.detections) and frame.crs.to_epsg() == 4326


def _random_detections(rng, n, width, height) -> Detections:
    x1, y1 = rng.uniform(0, width - 20, n), rng.uniform(0, height - 20, n)
    w, h = rng.uniform(0.5, 20, (2, n))
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)
    return Detections(boxes, rng.uniform(0.3, 1, n).astype(np.float32), rng.integers(1, 3, n))


def _expected_features(result, crs_mode) -> list[dict]:
    """What the writer built as objects before it streamed: one dict per detection, by rasterio."""
    scene, det = result.scene, result.detections
    reproject = scene.crs if crs_mode == "wgs84" and scene.crs is not None else None
    features = []
    for box, score, label in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
        if scene.crs is None:
            x1, y1, x2, y2 = box
            ring = np.array([(x1, y1), (x1, y2), (x2, y2), (x2, y1)])
        else:
            ring = _expected_corners(scene.transform, box, reproject)
        ring = np.concatenate([ring, ring[:1]])
        x, y = ring[:, 0], ring[:, 1]
        if np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) < 0:
            ring = ring[::-1]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "label": result.class_names[label - 1],
                    "class_id": label,
                    "score": score,
                    "scene": Path(result.path).name,
                    "pixel_bbox": box,
                },
            }
        )
    return features


@pytest.mark.parametrize(
    "kind,crs_mode",
    [
        ("utm", "wgs84"),
        ("utm", "native"),
        ("rotated", "wgs84"),
        ("geographic", "wgs84"),
        ("bare", "wgs84"),
    ],
)
def test_streamed_files_equal_the_objects_they_stand_for(
    tmp_path, detector, monkeypatch, kind, crs_mode
):
    """GeoJSON, COCO and CSV written in chunks (7 detections, so chunk seams are crossed) parse to
    the
    dicts and rows an object-building writer makes from the same detections, coordinates by
    rasterio."""
    monkeypatch.setattr("scalemae_det.base.rows.CHUNK", 7)
    geo = {
        "utm": {},
        "rotated": {"transform": Affine.translation(500_000, 4_000_000) @ Affine.rotation(-20)},
        "geographic": {"crs": "EPSG:4326", "transform": Affine(1e-5, 0, 12.5, 0, -1e-5, 41.9)},
        "bare": {"crs": None},
    }[kind]
    path = scene_with_squares(tmp_path / 'odd "name", 100%.tif', 150, 120, [(10, 10)], **geo)
    result = detector.detect_scene(path)
    result.detections = _random_detections(np.random.default_rng(5), 40, 150, 120)
    result.class_names = ['red, "thing"', "blue %s thing"]  # quoting and %-signs must pass through
    det = result.detections

    doc = json.loads(write(result, tmp_path / "d.geojson", "geojson", crs_mode).read_text())
    assert doc["type"] == "FeatureCollection"
    assert ("crs" in doc) == (crs_mode == "native" and kind != "bare") and doc.get(
        "pixel_coordinates"
    ) == (kind == "bare" or None)
    expected = _expected_features(result, crs_mode)
    assert len(doc["features"]) == len(expected) == 40
    for got, want in zip(doc["features"], expected):
        ring = np.array(got["geometry"]["coordinates"][0])
        assert ring.shape == (5, 2) and np.allclose(
            ring, want["geometry"]["coordinates"][0], rtol=0, atol=1e-9
        )
        assert got["properties"] == want["properties"] and got["type"] == "Feature"
        assert got["geometry"]["type"] == "Polygon"

    coco = json.loads(write(result, tmp_path / "d.json", "coco").read_text())
    assert coco == [
        {
            "image_id": path.name,
            "category_id": label,
            "score": score,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
        }
        for (x1, y1, x2, y2), score, label in zip(
            det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()
        )
    ]

    rows = list(csv.reader(open(write(result, tmp_path / "d.csv", "csv", crs_mode), newline="")))
    assert rows[0] == [
        "scene",
        "label",
        "class_id",
        "score",
        "x1",
        "y1",
        "x2",
        "y2",
        "center_x",
        "center_y",
    ]
    assert len(rows) == 41
    for row, want in zip(rows[1:], expected):
        props = want["properties"]
        assert row[:4] == [
            props["scene"],
            props["label"],
            str(props["class_id"]),
            repr(props["score"]),
        ]
        assert [float(v) for v in row[4:8]] == props["pixel_bbox"]
        x1, y1, x2, y2 = props["pixel_bbox"]
        centre = np.array([[(x1 + x2) / 2, (y1 + y2) / 2]])
        if result.scene.crs is not None:
            xs, ys = xy(result.scene.transform, [centre[0, 1]], [centre[0, 0]], offset="ul")
            if crs_mode == "wgs84":
                xs, ys = warp(result.scene.crs, "EPSG:4326", xs, ys)
            centre = np.array([[xs[0], ys[0]]])
        assert np.allclose([float(row[8]), float(row[9])], centre[0], rtol=0, atol=1e-9)
    assert list(tmp_path.glob(".*")) == []  # nothing left beside the outputs


def test_a_named_crs_is_rasterios_reprojection_and_is_named_in_the_file(tmp_path, detector):
    from scalemae_det.runtime.outputs import output_crs

    scene = raster("RGB.byte.tif", ORIGINS[0], tmp_path)
    result = detector.detect_scene(scene, gsd_mode="as-is")
    doc = json.loads(
        write(result, tmp_path / "o.geojson", "geojson", output_crs("EPSG:3857")).read_text()
    )
    assert doc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::3857"
    with rasterio.open(scene) as ds:
        transform, crs = ds.transform, ds.crs
    for feature in doc["features"][:50]:
        x1, y1, x2, y2 = feature["properties"]["pixel_bbox"]
        xs, ys = xy(transform, [y1, y2, y2, y1], [x1, x1, x2, x2], offset="ul")
        expected = np.stack(warp(crs, "EPSG:3857", xs, ys), 1)
        _check_ring(feature["geometry"]["coordinates"][0], expected, atol=1e-6)
    assert output_crs("EPSG:4326") == "wgs84" and output_crs("NATIVE") == "native"


@pytest.mark.parametrize("fmt", ["geojson", "coco", "csv", "gpkg"])
def test_every_format_reads_back_as_it_was_detected(tmp_path, detector, fmt):
    from scalemae_det.runtime.outputs import FORMATS, read_detections

    if fmt == "gpkg":
        pytest.importorskip("pyogrio", reason="pyogrio is not installed (the gis extra)")
    scene = raster("RGB.byte.tif", ORIGINS[0], tmp_path)
    result = detector.detect_scene(scene, gsd_mode="as-is")
    back = read_detections(write(result, tmp_path / f"o{FORMATS[fmt]}", fmt, "wgs84"))
    det = result.detections
    np.testing.assert_array_equal(back.boxes, det.boxes.astype(np.float64))
    np.testing.assert_array_equal(back.scores, det.scores.astype(np.float64))
    np.testing.assert_array_equal(back.class_ids, det.labels)
    if fmt == "coco":
        assert back.labels is None and set(back.scenes) == {image_id(str(scene))}
    else:
        assert set(back.scenes) == {"RGB.byte.tif"}
        assert list(back.labels) == [result.class_names[c - 1] for c in det.labels]


def test_a_file_that_is_not_detections_is_one_clear_error(tmp_path):
    from scalemae_det.base.errors import InputError, MissingPathError
    from scalemae_det.runtime.outputs import read_detections

    (tmp_path / "x.geojson").write_text('{"type": "FeatureCollection", "features": [{}]}')
    with pytest.raises(InputError, match="x.geojson: not a file of detections"):
        read_detections(tmp_path / "x.geojson")
    (tmp_path / "y.json").write_text("{")
    with pytest.raises(InputError, match="y.json: not JSON"):
        read_detections(tmp_path / "y.json")
    with pytest.raises(MissingPathError):
        read_detections(tmp_path / "none.csv")


def test_predict_write_failure_is_one_line_and_leaves_no_partial_file(
    world, place, monkeypatch, capsys
):
    import scalemae_det.runtime.outputs as outputs

    def disk_full(result, path, *args):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(outputs, "write", disk_full)
    args = commands.values(world, place)
    code, _, err = commands.run(commands.PREDICT, args, monkeypatch, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err
    assert "a.geojson" in errors[0] and "No space left on device" in errors[0]
    commands.nothing(place, world)
