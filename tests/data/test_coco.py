"""COCO dataset: record checks, class mapping, pixel values, per-image GSD and errors."""

import json
import logging

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from helpers.realdata import ORIGINS, raster
from scalemae_det.base.errors import UserError
from scalemae_det.base.geo import gsd_m
from scalemae_det.data.coco import CocoDetection, batch_gsd, collate
from scalemae_det.data.labels import indexed_coco
from scalemae_det.data.transforms import AugmentConfig, TrainTransform
from scalemae_det.metrics.coco_ap import evaluate_detections


def _write(path, data, driver, **geo):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver=driver,
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        **geo,
    ) as dst:
        dst.write(data)


@pytest.fixture(params=ORIGINS)
def dataset_dir(tmp_path, request):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    pixels = {
        "a.png": rng.integers(0, 256, (3, 30, 40), dtype=np.uint8),
        "b.tif": rng.integers(0, 256, (4, 60, 50), dtype=np.uint8),
        "c.jpg": np.full((3, 32, 32), 128, np.uint8),
        "sub/d.png": rng.integers(0, 256, (3, 20, 20), dtype=np.uint8),
    }
    _write(images / "a.png", pixels["a.png"], "PNG")
    _write(
        images / "b.tif",
        pixels["b.tif"],
        "GTiff",
        photometric="MINISBLACK",
        crs="EPSG:32633",
        transform=from_origin(500000, 5000000, 2.0, 2.0),
    )
    _write(images / "c.jpg", pixels["c.jpg"], "JPEG")
    _write(images / "sub" / "d.png", pixels["sub/d.png"], "PNG")
    _write(tmp_path / "outside.png", pixels["a.png"], "PNG")
    real16 = raster(
        "RGBA.uint16.tif", request.param, tmp_path
    )  # the real 16-bit scene, or its equivalent
    (images / "real16.tif").symlink_to(real16)  # a symlinked image is fine
    with rasterio.open(real16) as ds:
        real16_size = {"width": ds.width, "height": ds.height}

    imgs = [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30, "gsd": 0.5},
        {"id": 2, "file_name": "b.tif", "width": 50, "height": 60, "gsd": 0.7},
        {"id": 3, "file_name": "c.jpg", "width": 32, "height": 32},
        {"id": 4, "file_name": "sub/d.png", "width": 20, "height": 20},  # no annotations
        {"id": 5, "file_name": "real16.tif", **real16_size},
        {"id": 6, "file_name": "missing.png", "width": 10, "height": 10},
        {"id": 7, "file_name": "../outside.png", "width": 40, "height": 30},
        {"id": 8, "file_name": "a.png", "width": 0, "height": 30},
        {"id": 9, "file_name": "a.png", "width": 40, "height": 30, "gsd": -1},
    ]
    good = [
        (1, 5, [2, 3, 10, 5]),
        (1, 2, [30, 20, 20, 20]),  # the second reaches past the edge
        (2, 9, [0, 0, 50, 60]),
        (3, 5, [1.5, 2.5, 3, 4]),
        (5, 2, [100, 100, 50, 40]),
    ]
    bad = [
        (1, 5, [2, 3, 0, 5]),
        (1, 5, [2, 3, 5, -1]),
        (3, 5, [40, 40, 5, 5]),
        (2, 4, [1, 1, 5, 5]),
        (42, 5, [1, 1, 5, 5]),
        (6, 5, [1, 1, 5, 5]),
        (1, 5, [1, 2, 3]),
        ([1], 5, [1, 1, 5, 5]),
        (1, [5], [1, 1, 5, 5]),
        (1, 5, "1,1,5,5"),
    ]
    anns = [
        {"id": i, "image_id": img, "category_id": c, "bbox": b, "iscrowd": 0}
        for i, (img, c, b) in enumerate(good + bad, 1)
    ]
    anns.append({"id": 99, "image_id": 1, "category_id": 5, "bbox": [0, 0, 9, 9], "iscrowd": 1})
    cats = [{"id": 5, "name": "car"}, {"id": 2, "name": "ship"}, {"id": 9, "name": "plane"}]
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    return images, labels, pixels


def test_records_checked_mapped_and_counted(dataset_dir, caplog):
    images, labels, _ = dataset_dir
    with caplog.at_level(logging.WARNING):
        ds = CocoDetection(images, labels)
    assert [r.image_id for r in ds.records] == [1, 2, 3, 4, 5]
    assert ds.category_ids == [2, 5, 9] and ds.class_names == ["ship", "car", "plane"]
    assert ds.num_classes == 3
    assert dict(ds.skipped) == {
        "missing image file": 1,
        "file_name outside the image dir": 1,
        "image of zero or negative size": 1,
        "gsd that is not a positive number": 1,
        "box of zero or negative size (or malformed)": 4,
        "box outside its image": 1,
        "unknown category": 2,
        "annotation of an unknown or skipped image": 3,
    }
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "labels.json: skipped 14 bad record(s)" in warnings[0]

    _, t1 = ds[0]
    assert torch.equal(t1["boxes"], torch.tensor([[2.0, 3.0, 12.0, 8.0], [30.0, 20.0, 40.0, 30.0]]))
    assert t1["labels"].tolist() == [2, 1] and t1["labels"].dtype == torch.int64
    assert t1["image_id"] == 1
    _, t3 = ds[2]
    assert torch.equal(t3["boxes"], torch.tensor([[1.5, 2.5, 4.5, 6.5]]))
    image4, t4 = ds[3]  # no annotations: kept, as a negative
    assert (
        t4["boxes"].shape == (0, 4) and t4["labels"].shape == (0,) and image4.shape == (3, 20, 20)
    )


def test_gsd_from_georeference_then_record_then_default(dataset_dir):
    images, labels, _ = dataset_dir
    ds = CocoDetection(images, labels, default_gsd=0.25)
    with rasterio.open(images / "b.tif") as src:
        geo = gsd_m(src.crs, src.transform, src.width, src.height)
    assert geo == pytest.approx(2.0, rel=2e-3)  # UTM scale factor and the spherical Earth
    assert ds[1][1]["gsd"] == geo  # georeferenced: its own gsd field (0.7) is not used
    assert ds[0][1]["gsd"] == 0.5  # a PNG with a gsd field
    assert ds[2][1]["gsd"] == 0.25  # neither: the default
    assert ds[4][1]["gsd"] == pytest.approx(1.38, rel=0.01)  # the real 16-bit scene (README)


def test_pixel_values_and_band_choice(dataset_dir):
    images, labels, pixels = dataset_dir
    image, _ = CocoDetection(images, labels)[0]
    assert image.dtype == torch.float32
    assert torch.equal(image, torch.from_numpy(pixels["a.png"]).float() / 255)
    image, _ = CocoDetection(images, labels, bands=(3, 1, 2))[1]
    expected = pixels["b.tif"][[2, 0, 1]].astype(np.float32) / np.float32(255)
    assert torch.equal(image, torch.from_numpy(expected))
    image, _ = CocoDetection(images, labels)[4]  # the uint16 RGBA scene, stretched
    with rasterio.open(images / "real16.tif") as ds:
        assert image.shape == (3, ds.height, ds.width) and 0 <= image.min() and image.max() <= 1


def test_transform_and_collate(dataset_dir):
    images, labels, _ = dataset_dir
    ds = CocoDetection(images, labels, transform=TrainTransform(AugmentConfig(input_size=64)))
    torch.manual_seed(0)
    imgs, targets = collate([ds[0], ds[1], ds[3]])
    assert [tuple(i.shape) for i in imgs] == [(3, 64, 64)] * 3
    assert [t["image_id"] for t in targets] == [1, 2, 4]
    gsd = batch_gsd(targets)
    assert gsd.shape == (3,) and torch.allclose(gsd, torch.tensor([t["gsd"] for t in targets]))


def test_label_file_not_json(dataset_dir):
    images, labels, _ = dataset_dir
    labels.write_text("images: [1, 2]")
    with pytest.raises(UserError) as err:
        CocoDetection(images, labels)
    assert str(err.value).startswith(f"{labels}: not a JSON file") and "\n" not in str(err.value)


def test_missing_image_dir(dataset_dir):
    images, labels, _ = dataset_dir
    with pytest.raises(UserError) as err:
        CocoDetection(images / "nope", labels)
    assert str(err.value) == f"{images / 'nope'}: images directory not found"


def test_no_usable_record(dataset_dir, tmp_path):
    images, _, _ = dataset_dir
    labels = tmp_path / "empty.json"
    labels.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "zz.png", "width": 5, "height": 5}],
                "annotations": [],
                "categories": [{"id": 1, "name": "x"}],
            }
        )
    )
    with pytest.raises(UserError, match="empty.json: no usable image record"):
        CocoDetection(images, labels)


@pytest.mark.parametrize("origin", ORIGINS)
def test_unreadable_image_is_a_one_line_error(tmp_path, origin):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "corrupt.tif").symlink_to(raster("corrupt.tif", origin, tmp_path))
    labels = tmp_path / "labels.json"
    labels.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "corrupt.tif", "width": 5, "height": 5}],
                "categories": [{"id": 1}],
            }
        )
    )
    ds = CocoDetection(tmp_path / "images", labels)
    with pytest.raises(UserError, match="corrupt.tif: reading failed"):
        ds[0]


def test_indexed_coco_holds_what_the_index_kept(dataset_dir, tmp_path):
    """Scoring labels: usable images, clipped boxes, each category once (duplicates and junk
    dropped)."""
    images, labels, _ = dataset_dir
    data = json.loads(labels.read_text())
    data["categories"] += [{"id": 5, "name": "car again"}, "junk"]
    labels.write_text(json.dumps(data))
    ds = CocoDetection(images, labels)
    gt = indexed_coco(ds.records, ds.categories)
    assert [c["id"] for c in gt["categories"]] == [2, 5, 9] and gt["categories"][1]["name"] == "car"
    assert [i["id"] for i in gt["images"]] == [1, 2, 3, 4, 5]
    boxes = {(a["image_id"], a["category_id"]): a["bbox"] for a in gt["annotations"]}
    assert boxes == {
        (1, 5): [2, 3, 10, 5],
        (1, 2): [30, 20, 10, 10],
        (2, 9): [0, 0, 50, 60],
        (3, 5): [1.5, 2.5, 3, 4],
        (5, 2): [100, 100, 50, 40],
    }
    perfect = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in gt["annotations"]
    ]
    metrics = evaluate_detections(gt, perfect)
    assert [row["id"] for row in metrics["per_class"]] == [2, 5, 9] and metrics[
        "AP50"
    ] == pytest.approx(1.0)
