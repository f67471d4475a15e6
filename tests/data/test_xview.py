"""xView conversion on a miniature xView: a GeoJSON in the real format and a few GeoTIFF scenes."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from helpers import commands
from scalemae_det.data.chipping import ChipConfig, split_scenes
from scalemae_det.data.readers.xview import XVIEW_CLASSES, prepare_xview

CHIP, OVERLAP = 400, 0.1  # stride 360
# scene -> (width, height, chip x offsets, chip y offsets), offsets worked out by hand: every
# 360 px, the last chip flush with the far edge; a scene smaller than a chip is one chip.
SCENES = {
    "5.tif": (1000, 900, [0, 360, 600], [0, 360, 500]),
    "12.tif": (700, 420, [0, 300], [0, 20]),
    "33.tif": (300, 250, [0], [0]),
    "100.tif": (760, 400, [0, 360], [0]),
    "2041.tif": (400, 800, [0], [0, 360, 400]),
    # black from x = 400 on, with no box there: the chip at x = 400 is blank and left out
    "7.tif": (800, 400, [0, 360], [0]),
}
BLANK_FROM = {"7.tif": 400}
MISSING = "1395.tif"  # labelled, no image (as in the real xView)
KNOWN = sorted(XVIEW_CLASSES)


def _feature(image_id, type_id, box, rng):
    lon, lat = rng.uniform(-180, 180), rng.uniform(-60, 60)
    return {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[lon, lat], [lon + 1e-4, lat], [lon + 1e-4, lat + 1e-4], [lon, lat]]],
        },
        "properties": {
            "bounds_imcoords": ",".join(str(int(v)) for v in box),
            "edited_by": "wwjohnsn",
            "cat_id": int(rng.integers(1e6)),
            "type_id": type_id,
            "ingest_time": "2017/07/24 12:49:09.118+00",
            "index_right": 2356,
            "image_id": image_id,
            "point_geom": "0101000020E6100000",
            "feature_id": int(rng.integers(1e6)),
            "grid_file": "Grid2.shp",
        },
    }


@pytest.fixture(scope="module")
def xview(tmp_path_factory):
    """Scenes on disk, the GeoJSON, and the boxes it holds as (scene, type_id, xyxy)."""
    root = tmp_path_factory.mktemp("xview")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    features, boxes = [], []
    for scene, (w, h, _, _) in SCENES.items():
        profile = dict(
            driver="GTiff",
            width=w,
            height=h,
            count=3,
            dtype="uint8",
            crs="EPSG:4326",
            transform=from_origin(rng.uniform(-100, 100), rng.uniform(-50, 50), 2.7e-6, 2.7e-6),
        )
        pixels = rng.integers(1, 256, (3, h, w), dtype=np.uint8)
        data_w = BLANK_FROM.get(scene, w)
        pixels[:, :, data_w:] = 0
        with rasterio.open(root / "images" / scene, "w", **profile) as dst:
            dst.write(pixels)
        for _ in range(40):  # small boxes (<= the 40 px overlap): each lies whole in some chip
            bw, bh = rng.integers(3, 40, 2)
            x0, y0 = rng.integers(0, data_w - bw), rng.integers(0, h - bh)
            boxes.append((scene, int(rng.choice(KNOWN)), (x0, y0, x0 + bw, y0 + bh)))
        for _ in range(15):  # large boxes, some across chip edges or past the scene's edge
            bw, bh = rng.integers(40, 300, 2)
            x0, y0 = rng.integers(-50, data_w - 10), rng.integers(-50, h - 10)
            x1 = x0 + bw if data_w == w else min(x0 + bw, data_w)
            boxes.append((scene, int(rng.choice(KNOWN)), (x0, y0, x1, y0 + bh)))
        boxes.append((scene, 75, (10, 10, 30, 30)))  # dropped class
    boxes.append((MISSING, 18, (5, 5, 20, 20)))
    features = [_feature(s, t, b, rng) for s, t, b in boxes]
    features.append(_feature("5.tif", 18, (0, 0, 0, 0), rng))
    features[-1]["properties"]["bounds_imcoords"] = "not,a,box"  # unusable feature
    geojson = root / "xView_train.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1))
    return root, geojson, boxes


def _convert(xview, out, **kw):
    root, geojson, _ = xview
    return prepare_xview(
        geojson, root / "images", out, cfg=ChipConfig(CHIP, OVERLAP), progress=False, **kw
    )


@pytest.fixture(scope="module")
def converted(xview, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    counts = _convert(xview, out, val_fraction=0.4, seed=13)
    return out, counts


def _load(out):
    records = {}
    for split in ("train", "val"):
        coco = json.loads((out / f"{split}.json").read_text())
        anns = {}
        for ann in coco["annotations"]:
            anns.setdefault(ann["image_id"], []).append(ann)
        for img in coco["images"]:
            records[img["file_name"]] = (split, img, anns.get(img["id"], []), coco["categories"])
    return records


def test_categories_are_the_xview_classes_minus_dropped(converted):
    out, _ = converted
    cats = json.loads((out / "train.json").read_text())["categories"]
    assert [c["id"] for c in cats] == list(range(1, 61))
    assert len(XVIEW_CLASSES) == 60 and 75 not in XVIEW_CLASSES and 82 not in XVIEW_CLASSES
    by_type = {c["xview_type_id"]: c["name"] for c in cats}
    assert (
        by_type[11] == "Fixed-wing Aircraft"
        and by_type[18] == "Small Car"
        and by_type[94] == "Tower"
    )


def test_chips_cover_scenes_with_their_georeference(xview, converted):
    root, _, _ = xview
    out, counts = converted
    records = _load(out)
    for scene, (w, h, xs, ys) in SCENES.items():
        chips = {
            (r[1]["x0"], r[1]["y0"]): name for name, r in records.items() if r[1]["scene"] == scene
        }
        assert sorted(chips) == sorted((x, y) for x in xs for y in ys), scene
        with rasterio.open(root / "images" / scene) as src:
            for (x0, y0), name in chips.items():
                win = Window(x0, y0, min(CHIP, w), min(CHIP, h))
                with rasterio.open(out / records[name][0] / name) as chip:
                    assert chip.crs == src.crs
                    assert chip.transform.almost_equals(src.window_transform(win))
                    assert (chip.width, chip.height) == (win.width, win.height)
                    assert np.array_equal(chip.read(), src.read(window=win))
    assert sum(counts["chips"].values()) == sum(
        len(xs) * len(ys) for _, _, xs, ys in SCENES.values()
    )


def test_every_box_lands_clipped_in_the_right_chips(xview, converted):
    _, _, boxes = xview
    out, counts = converted
    records = _load(out)
    name_of = dict(XVIEW_CLASSES)
    for file_name, (_, img, anns, cats) in records.items():
        cat_name = {c["id"]: c["name"] for c in cats}
        cx0, cy0, cw, ch = img["x0"], img["y0"], img["width"], img["height"]
        sw, sh = SCENES[img["scene"]][:2]
        expected, ignored = [], []
        for scene, type_id, (x0, y0, x1, y1) in boxes:
            if scene != img["scene"] or type_id not in name_of:
                continue
            # the part inside the scene, then the part inside the chip, in chip pixels
            sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, sw), min(y1, sh)
            if sx1 <= sx0 or sy1 <= sy0:
                continue
            kx0, ky0 = max(sx0 - cx0, 0), max(sy0 - cy0, 0)
            kx1, ky1 = min(sx1 - cx0, cw), min(sy1 - cy0, ch)
            kw, kh = kx1 - kx0, ky1 - ky0
            # per axis, against what the chip can show of that side; the rest that touches it is
            # ignored
            if (
                kw >= 2
                and kh >= 2
                and kw >= 0.5 * min(sx1 - sx0, cw)
                and kh >= 0.5 * min(sy1 - sy0, ch)
            ):
                expected.append((name_of[type_id], kx0, ky0, kw, kh))
            elif kw > 0 and kh > 0:
                ignored.append((name_of[type_id], kx0, ky0, kw, kh))
        got = [(cat_name[a["category_id"]], *a["bbox"]) for a in anns if not a["iscrowd"]]
        assert sorted(got) == sorted(expected), file_name
        crowd = [(cat_name[a["category_id"]], *a["bbox"]) for a in anns if a["iscrowd"]]
        assert sorted(crowd) == sorted(ignored), file_name
        for a in anns:
            assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3])

    # each small box lies whole in at least one chip, unclipped
    whole = {
        (
            r[1]["scene"],
            a["bbox"][0] + r[1]["x0"],
            a["bbox"][1] + r[1]["y0"],
            a["bbox"][2],
            a["bbox"][3],
        )
        for r in records.values()
        for a in r[2]
        if not a["iscrowd"]
    }
    for scene, type_id, (x0, y0, x1, y1) in boxes:
        if scene in SCENES and type_id != 75 and x1 - x0 < 40 and y1 - y0 < 40:
            assert (scene, x0, y0, x1 - x0, y1 - y0) in whole
    assert counts["dropped_boxes"] == len(SCENES)  # one class-75 box per scene
    assert counts["bad_features"] == 1


def test_split_is_by_scene_and_seeded(xview, converted, tmp_path):
    out, counts = converted
    records = _load(out)
    split_of = {}
    for split, img, _, _ in records.values():
        assert split_of.setdefault(img["scene"], split) == split  # all chips of a scene together
    assert set(split_of) == set(SCENES)
    assert sum(s == "val" for s in split_of.values()) == 2  # round(6 * 0.4)
    assert counts["scenes"] == {"train": 4, "val": 2}
    # the same seed gives the same files
    again = tmp_path / "again"
    _convert(xview, again, val_fraction=0.4, seed=13)
    for split in ("train", "val"):
        assert (again / f"{split}.json").read_text() == (out / f"{split}.json").read_text()

    scenes = [f"{i}.tif" for i in range(40)]
    train, val = split_scenes(scenes, 0.25, seed=13)
    assert len(val) == 10 and sorted(train + val) == sorted(scenes)
    assert split_scenes(list(reversed(scenes)), 0.25, seed=13) == (train, val)  # order-free
    assert split_scenes(scenes, 0.25, seed=14)[1] != val


def test_missing_scene_reported_in_one_line(xview, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        counts = _convert(xview, tmp_path / "o")
    assert counts["missing_scenes"] == [MISSING]
    lines = [r.getMessage() for r in caplog.records if MISSING in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert not list((tmp_path / "o").glob("**/.*tmp*"))  # no temporaries left behind


def test_cli_errors_are_one_line(xview, tmp_path):
    root, geojson, _ = xview
    cmd = [sys.executable, "-c", "from scalemae_det.cli import main; main()", "prepare-xview"]
    res = subprocess.run(
        [
            *cmd,
            "--geojson",
            str(geojson),
            "--images",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert res.returncode == 1
    assert res.stderr.strip() == f"error: {tmp_path / 'nope'}: images directory not found"
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", ')
    res = subprocess.run(
        [
            *cmd,
            "--geojson",
            str(bad),
            "--images",
            str(root / "images"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith(f"error: {bad}: invalid GeoJSON")


def test_streamed_features_equal_json_load(xview):
    _, geojson, _ = xview
    from scalemae_det.data.readers.xview import iter_features

    text = geojson.read_text()
    # a non-ASCII character split across chunk boundaries must survive too
    path = geojson.with_name("utf8.geojson")
    path.write_text(text.replace('"wwjohnsn"', '"Zoë Ångström"'), encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))["features"]
    seen = []
    assert list(iter_features(path, seen.append, chunk_size=97)) == expected
    assert sum(seen) == path.stat().st_size


def test_box_larger_than_a_chip_and_box_across_a_corner_are_kept_clipped(tmp_path):
    """The area rule lost both: a 500 px box is at most 64% inside a 400 px chip, and a box 60%
    inside
    along each side of a chip corner is 36% inside by area."""
    (tmp_path / "images").mkdir()
    with rasterio.open(
        tmp_path / "images" / "9.tif",
        "w",
        driver="GTiff",
        width=1000,
        height=900,
        count=3,
        dtype="uint8",
        crs="EPSG:4326",
        transform=from_origin(10, 20, 2.7e-6, 2.7e-6),
    ) as dst:
        dst.write(np.full((3, 900, 1000), 7, np.uint8))
    huge, corner, sliver = (150, 200, 650, 700), (330, 320, 430, 420), (395, 100, 425, 130)
    rng = np.random.default_rng(1)
    geojson = tmp_path / "labels.geojson"
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    _feature("9.tif", t, b, rng)
                    for t, b in ((77, huge), (73, corner), (18, sliver))
                ],
            }
        )
    )
    prepare_xview(
        geojson,
        tmp_path / "images",
        tmp_path / "out",
        cfg=ChipConfig(CHIP, OVERLAP),
        val_fraction=0,
        progress=False,
    )
    records = _load(tmp_path / "out")
    chip = next(r for r in records.values() if (r[1]["x0"], r[1]["y0"]) == (0, 0))
    boxes = {(a["category_id"], a["iscrowd"]): a["bbox"] for a in chip[2]}
    cat = {c["xview_type_id"]: c["id"] for c in chip[3]}
    # chip (0, 0) is 400 x 400: the huge box appears clipped to it, the corner box as its 70 x 80
    # part
    assert boxes[(cat[77], 0)] == [150, 200, 250, 200]
    assert boxes[(cat[73], 0)] == [330, 320, 70, 80]
    # 5 of the sliver's 30 px are in the chip: an ignore region, not a box and not lost
    assert boxes[(cat[18], 1)] == [395, 100, 5, 30] and (cat[18], 0) not in boxes
    # the huge box, in every chip: kept where at least half of a chip side of it shows (200 px),
    # else ignored
    for r in records.values():
        x0, y0 = r[1]["x0"], r[1]["y0"]
        shown_x, shown_y = min(650, x0 + 400) - max(150, x0), min(700, y0 + 400) - max(200, y0)
        kinds = [a["iscrowd"] for a in r[2] if a["category_id"] == cat[77]]
        assert kinds == [0 if min(shown_x, shown_y) >= 200 else 1], (x0, y0)


def test_prepare_xview_skips_unreadable_scenes_and_a_rerun_keeps_no_chip_of_the_other_split(
    world, place, monkeypatch, capsys
):
    args = commands.values(world, place)
    xview = (
        "prepare-xview --geojson {xview_all} --images {xview_images} --out {out} "
        "--chip 128 --seed 3"
    )
    code, out, err = commands.run(
        f"{xview} --val-fraction 0 --skip-unreadable", args, monkeypatch, capsys
    )
    assert code == 0, err
    assert "1 unreadable scene(s) skipped" in out
    train = json.loads((place["out"] / "train.json").read_text())
    assert {i["scene"] for i in train["images"]} == {"1.tif", "2.tif", "3.tif"}
    assert not [p for p in place["out"].iterdir() if p.name.startswith(".")]  # no work folder left

    code, _, err = commands.run(
        f"{xview} --val-fraction 0.5 --skip-unreadable", args, monkeypatch, capsys
    )
    assert code == 0, err
    for split in ("train", "val"):
        records = json.loads((place["out"] / f"{split}.json").read_text())["images"]
        on_disk = sorted(p.name for p in (place["out"] / split).iterdir())
        assert (
            on_disk == sorted(r["file_name"] for r in records) and on_disk
        )  # exactly this run's chips
    scenes = [
        {r["scene"] for r in json.loads((place["out"] / f"{s}.json").read_text())["images"]}
        for s in ("train", "val")
    ]
    assert not scenes[0] & scenes[1]
