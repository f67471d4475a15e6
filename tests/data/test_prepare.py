"""`prepare` per label format, against the pixel boxes the labels were written from.

Every format is written here from pixel boxes chosen by the test (VOC and CSV as they are, YOLO
normalised by hand, COCO as xywh, vector outlines through the scene's affine transform and
rasterio's warp), so the scene-level truth `prepare` writes must give those boxes back, clipped to
the scene by hand; the chips are checked against the scene's pixels read by rasterio.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window

from helpers import labelled
from scalemae_det.base.errors import UserError
from scalemae_det.data.chipping import ChipConfig
from scalemae_det.data.labels import index_coco
from scalemae_det.data.prepare import prepare

CHIP = ChipConfig(chip=128, overlap=0.1)
# two plain images and the objects drawn on them: (class, (xmin, ymin, xmax, ymax)) in pixels
PLAIN = {
    "a.png": (
        300,
        200,
        [
            ("car", (10, 12, 40, 30)),
            ("tree", (100.5, 50, 160.25, 120)),
            ("car", (280, 150, 330, 230)),  # past the bottom-right corner: clipped to 300 x 200
            ("tree", (5, 5, 5, 25)),  # zero width: skipped, counted
        ],
    ),
    "b.png": (250, 260, [("tree", (0, 0, 249, 259)), ("bus", (60, 70, 90, 80))]),
}


def _expected(objects, width, height):
    """(class, x, y, w, h) of the boxes clipped to the image, those of zero size left out."""
    out = []
    for name, (x0, y0, x1, y1) in objects:
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 > x0 and y1 > y0:
            out.append((name, x0, y0, x1 - x0, y1 - y0))
    return sorted(out)


def _scene_truth(out: Path) -> dict[str, tuple[dict, list]]:
    """scene file name -> (image record, sorted (class, x, y, w, h)) from both splits."""
    truth = {}
    for split in ("train", "val"):
        coco = json.loads((out / f"{split}_scenes.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        for img in coco["images"]:
            anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
            truth[img["file_name"]] = (
                img,
                sorted((names[a["category_id"]], *a["bbox"]) for a in anns),
            )
    return truth


def _assert_boxes(got, expected, tol=1e-6):
    assert [g[0] for g in got] == [e[0] for e in expected]
    np.testing.assert_allclose([g[1:] for g in got], [e[1:] for e in expected], atol=tol)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plain")
    (root / "images").mkdir()
    for k, (name, (w, h, _)) in enumerate(PLAIN.items()):
        labelled.scene(root / "images" / name, w, h, seed=k)
    return root


def _prepare(images, labels, out, **kw):
    kw.setdefault("val_fraction", 0)
    return prepare(images, labels, out, cfg=CHIP, progress=False, **kw)


def _check_plain(out: Path, counts: dict, plain: Path, gsd: float = 0.1):
    truth = _scene_truth(out)
    assert sorted(truth) == sorted(PLAIN)
    for name, (w, h, objects) in PLAIN.items():
        record, got = truth[name]
        assert (record["width"], record["height"], record["gsd"]) == (w, h, gsd)
        _assert_boxes(got, _expected(objects, w, h))
    assert counts["skipped"] == {"box(es) of zero or negative size": 1}


def test_voc_folder_gives_back_the_boxes_and_chips_hold_the_pixels(plain, tmp_path, caplog):
    (tmp_path / "xml").mkdir()
    for name, (w, h, objects) in PLAIN.items():
        labelled.voc(tmp_path / "xml" / f"{Path(name).stem}.xml", name, w, h, objects)
    with caplog.at_level(logging.WARNING):
        counts = _prepare([plain / "images"], tmp_path / "xml", tmp_path / "out", gsd=0.1)
    _check_plain(tmp_path / "out", counts, plain)
    assert counts["classes"] == ["bus", "car", "tree"]  # sorted: VOC has no class order
    assert any(
        "1 box(es) of zero or negative size skipped" in r.getMessage() for r in caplog.records
    )
    # chips: GeoTIFFs holding the PNG's pixels at their offsets, recorded with the given GSD
    coco = json.loads((tmp_path / "out" / "train.json").read_text())
    for img in coco["images"]:
        with (
            rasterio.open(tmp_path / "out" / "train" / img["file_name"]) as chip,
            rasterio.open(plain / "images" / img["scene"]) as src,
        ):
            win = Window(img["x0"], img["y0"], img["width"], img["height"])
            assert chip.driver == "GTiff" and img["gsd"] == 0.1
            assert np.array_equal(chip.read(), src.read(window=win))
    # train.py's label index takes the output as it is
    index = index_coco(tmp_path / "out" / "train", tmp_path / "out" / "train.json")
    assert len(index.images) == len(coco["images"]) and not index.skipped
    assert {r.gsd for r in index.images} == {0.1}


def test_voc_single_file_and_classes_option_fix_order_and_drop(plain, tmp_path):
    w, h, objects = PLAIN["a.png"]
    xml = labelled.voc(tmp_path / "one.xml", "a.png", w, h, objects)
    counts = _prepare(
        [plain / "images" / "a.png"], xml, tmp_path / "out", gsd=0.1, classes=["tree", "car"]
    )
    coco = json.loads((tmp_path / "out" / "train_scenes.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["tree", "car"]
    kept = [o for o in objects if o[0] in ("tree", "car")]
    _assert_boxes(_scene_truth(tmp_path / "out")["a.png"][1], _expected(kept, w, h))
    assert counts["dropped_classes"] == {}  # a.png has no bus
    counts = _prepare(
        [plain / "images" / "a.png"], xml, tmp_path / "out2", gsd=0.1, classes=["tree"]
    )
    assert counts["dropped_classes"] == {"car": 2}


def test_yolo_normalised_boxes_come_back_in_pixels(plain, tmp_path):
    names = ["tree", "car", "bus"]
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "classes.txt").write_text("\n".join(names) + "\n")
    w, h, objects = PLAIN["a.png"]
    # YOLO cannot hold a box past the image edge: give the clipped ones
    clipped = [
        (n, (max(x0, 0), max(y0, 0), min(x1, w), min(y1, h))) for n, (x0, y0, x1, y1) in objects
    ]
    labelled.yolo(labels, "a", w, h, clipped, names)
    counts = _prepare([plain / "images"], labels, tmp_path / "out", gsd=0.1)
    truth = _scene_truth(tmp_path / "out")
    _assert_boxes(truth["a.png"][1], _expected(objects, w, h), tol=1e-4)
    assert truth["b.png"][1] == []  # no txt file: a background image
    assert counts["classes"] == names  # the names file's order
    assert counts["skipped"] == {"box(es) of zero or negative size": 1}


def test_yolo_names_from_a_data_yaml_above_the_labels(plain, tmp_path):
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("path: .\nnames:\n  0: bus\n  1: tree\n")
    w, h, objects = PLAIN["b.png"]
    labelled.yolo(tmp_path / "labels" / "train", "b", w, h, objects, ["bus", "tree"])
    counts = _prepare(
        [plain / "images" / "b.png"], tmp_path / "labels" / "train", tmp_path / "o", gsd=0.1
    )
    assert counts["classes"] == ["bus", "tree"]
    _assert_boxes(_scene_truth(tmp_path / "o")["b.png"][1], _expected(objects, w, h), tol=1e-4)


def test_csv_deepforest_rows_relative_to_the_csv_folder(plain, tmp_path):
    rows = ["image_path,xmin,ymin,xmax,ymax,label,score"]
    for name, (_, _, objects) in PLAIN.items():
        ref = f"images/{name}" if name == "a.png" else name  # a path, and a bare file name
        rows += [f"{ref},{x0},{y0},{x1},{y1},{c},0.9" for c, (x0, y0, x1, y1) in objects]
    (plain / "c.png").exists() or labelled.scene(plain / "c.png", 64, 64)
    rows.append("c.png,0,0,0,0,Tree,")  # DeepForest's mark of an image without objects
    csv = plain / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    counts = _prepare([plain / "images", plain / "c.png"], csv, tmp_path / "out", gsd=0.1)
    truth = _scene_truth(tmp_path / "out")
    assert truth["c.png"][1] == []  # a negative, kept
    del truth["c.png"]
    for name, (w, h, objects) in PLAIN.items():
        _assert_boxes(truth[name][1], _expected(objects, w, h))
    assert counts["skipped"] == {"box(es) of zero or negative size": 2}


def test_coco_whole_images(plain, tmp_path):
    images, annotations = [], []
    for k, (name, (w, h, objects)) in enumerate(PLAIN.items(), 1):
        images.append({"id": 10 * k, "file_name": name, "width": w, "height": h})
        for c, (x0, y0, x1, y1) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 10 * k,
                    "category_id": {"car": 7, "tree": 3, "bus": 5}[c],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                }
            )
    annotations.append(
        {"id": 99, "image_id": 10, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 1}
    )
    cats = [{"id": 7, "name": "car"}, {"id": 3, "name": "tree"}, {"id": 5, "name": "bus"}]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    counts = _prepare([plain / "images"], path, tmp_path / "out", gsd=0.1)
    _check_plain(
        tmp_path / "out",
        {**counts, "skipped": {k: v for k, v in counts["skipped"].items() if "crowd" not in k}},
        plain,
    )
    assert counts["classes"] == ["tree", "bus", "car"]  # category id order
    assert counts["skipped"]["crowd region(s) (iscrowd, not objects)"] == 1


# --- vector labels ------------------------------------------------------------------------------

UTM = "EPSG:32612"
UTM_T = from_origin(528_000, 4_978_000, 0.5, 0.5)
ROTATED_T = Affine.translation(528_400, 4_978_100) @ Affine.rotation(25) @ Affine.scale(0.5, -0.5)
WGS84_T = from_origin(-110.6, 44.95, 6e-6, 6e-6)  # ~0.47 m x 0.67 m near Yellowstone
BOXES = np.array([[10, 20, 50, 60], [100, 30, 180, 90], [250, 150, 330, 220]], float)
KINDS = ["tree", "car", "tree"]


def _geo_scene(path, transform, crs=UTM, w=300, h=200):
    return labelled.scene(path, w, h, crs=crs, transform=transform)


@pytest.mark.parametrize(
    "scene_crs, transform, label_crs, driver, suffix",
    [
        (UTM, UTM_T, UTM, "GPKG", ".gpkg"),
        (UTM, UTM_T, "EPSG:4326", "GeoJSON", ".geojson"),
        (UTM, ROTATED_T, "EPSG:4326", "FlatGeobuf", ".fgb"),
        ("EPSG:4326", WGS84_T, UTM, "ESRI Shapefile", ".shp"),
        ("EPSG:4326", WGS84_T, "EPSG:4326", "GeoJSON", ".geojson"),
    ],
    ids=["utm-gpkg", "utm-scene-4326-geojson", "rotated-4326-fgb", "4326-scene-utm-shp", "4326"],
)
def test_vector_outlines_come_back_as_the_pixel_boxes(
    tmp_path, scene_crs, transform, label_crs, driver, suffix
):
    scene = _geo_scene(tmp_path / "s.tif", transform, scene_crs)
    rings = labelled.geo_rings(transform, scene_crs, BOXES, label_crs)
    labels = labelled.vector(tmp_path / f"l{suffix}", rings, KINDS, label_crs, driver)
    counts = _prepare([scene], labels, tmp_path / "out", class_field="kind")
    record, got = _scene_truth(tmp_path / "out")["s.tif"]
    objects = list(zip(KINDS, BOXES.tolist()))
    _assert_boxes(got, _expected(objects, 300, 200), tol=1e-3)
    with rasterio.open(scene) as ds:  # the GSD is measured, as predict measures it
        from scalemae_det.base.geo import gsd_m

        assert record["gsd"] == pytest.approx(gsd_m(ds.crs, ds.transform, ds.width, ds.height))
    assert counts["classes"] == ["car", "tree"] and counts["boxes_outside_scene"] == 0


def test_one_vector_file_over_two_scenes(tmp_path):
    left = _geo_scene(tmp_path / "left.tif", UTM_T)
    right_t = from_origin(
        528_000 + 150, 4_978_000, 0.5, 0.5
    )  # starts 300 px right of left's origin
    right = _geo_scene(tmp_path / "right.tif", right_t)
    # in left's pixels: one box on left only, one across the seam (x 280..320), one on right only,
    # one on neither (far south)
    boxes = np.array(
        [[10, 10, 40, 40], [280, 50, 320, 90], [400, 100, 450, 150], [10, 5000, 40, 5030]], float
    )
    rings = labelled.geo_rings(UTM_T, UTM, boxes, "EPSG:4326")
    labels = labelled.vector(
        tmp_path / "l.geojson", rings, ["a", "b", "c", "d"], "EPSG:4326", "GeoJSON"
    )
    counts = _prepare([left, right], labels, tmp_path / "out", class_field="kind")
    truth = _scene_truth(tmp_path / "out")
    _assert_boxes(truth["left.tif"][1], [("a", 10, 10, 30, 30), ("b", 280, 50, 20, 40)], tol=1e-3)
    # right's pixels are left's shifted by 300
    _assert_boxes(truth["right.tif"][1], [("b", 0, 50, 20, 40), ("c", 100, 100, 50, 50)], tol=1e-3)
    assert counts["skipped"] == {"feature(s) falling on no image": 1}
    assert counts["classes"] == ["a", "b", "c"]


def test_points_become_squares_of_point_size_metres(tmp_path):
    scene = _geo_scene(tmp_path / "s.tif", UTM_T)
    # pixel centres (40.5, 60.5) and (200, 10); 3 m at 0.5 m pixels is 6 px
    points = [UTM_T @ (40.5, 60.5), UTM_T @ (200, 10)]
    labels = labelled.vector(tmp_path / "p.gpkg", points, ["x", "y"], UTM, "GPKG", points=True)
    _prepare([scene], labels, tmp_path / "out", class_field="kind", point_size=3.0)
    _, got = _scene_truth(tmp_path / "out")["s.tif"]
    # the GSD measured on the ground (haversine) is within 0.1% of the 0.5 m the UTM grid says
    _assert_boxes(got, [("x", 37.5, 57.5, 6, 6), ("y", 197, 7, 6, 6)], tol=0.02)


def test_no_class_field_is_one_class_named_after_the_layer(tmp_path, caplog):
    scene = _geo_scene(tmp_path / "s.tif", UTM_T)
    rings = labelled.geo_rings(UTM_T, UTM, BOXES, UTM)
    labels = labelled.vector(tmp_path / "crowns.gpkg", rings, KINDS, UTM, "GPKG")
    with caplog.at_level(logging.WARNING):
        counts = _prepare([scene], labels, tmp_path / "out")
    assert counts["classes"] == ["crowns"]
    assert any("the fields are: kind, serial" in r.getMessage() for r in caplog.records)


def test_single_scene_is_all_train_and_warned(plain, tmp_path, caplog):
    w, h, objects = PLAIN["a.png"]
    xml = labelled.voc(tmp_path / "a.xml", "a.png", w, h, objects)
    with caplog.at_level(logging.WARNING):
        counts = _prepare(
            [plain / "images" / "a.png"], xml, tmp_path / "o", gsd=0.1, val_fraction=0.3
        )
    assert counts["scenes"] == {"train": 1, "val": 0}
    assert any("one scene cannot be split" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "o" / "val.json").read_text())["images"] == []


def test_split_is_by_scene_and_seeded(tmp_path):
    scenes = []
    for k in range(5):
        t = from_origin(528_000 + 200 * k, 4_978_000, 0.5, 0.5)
        scenes.append(_geo_scene(tmp_path / f"s{k}.tif", t))
    rings = labelled.geo_rings(UTM_T, UTM, [[10, 10, 50, 50]], UTM)
    labels = labelled.vector(tmp_path / "l.gpkg", rings, ["a"], UTM, "GPKG")
    a = _prepare(scenes, labels, tmp_path / "a", val_fraction=0.4, seed=5)
    b = _prepare(scenes, labels, tmp_path / "b", val_fraction=0.4, seed=5)
    assert a["split"] == b["split"] and len(a["split"]["val"]) == 2
    chips = json.loads((tmp_path / "a" / "val.json").read_text())["images"]
    assert {c["scene"] for c in chips} == set(a["split"]["val"])


def test_georeferenced_images_ignore_gsd_and_say_so(tmp_path, caplog):
    scene = _geo_scene(tmp_path / "s.tif", UTM_T)
    labels = labelled.vector(
        tmp_path / "l.gpkg", labelled.geo_rings(UTM_T, UTM, BOXES, UTM), KINDS, UTM, "GPKG"
    )
    with caplog.at_level(logging.WARNING):
        _prepare([scene], labels, tmp_path / "o", gsd=0.3)
    assert any("gsd 0.3 not used for 1 georeferenced" in r.getMessage() for r in caplog.records)
    record, _ = _scene_truth(tmp_path / "o")["s.tif"]
    assert record["gsd"] == pytest.approx(0.5, rel=2e-3)


def test_labels_outside_every_image_are_refused(plain, tmp_path):
    xml = labelled.voc(tmp_path / "a.xml", "a.png", 300, 200, [("car", (400, 300, 420, 330))])
    with pytest.raises(UserError, match="none of the 1 boxes falls on its image"):
        _prepare([plain / "images"], xml, tmp_path / "o", gsd=0.1)
    assert not (tmp_path / "o").exists()
