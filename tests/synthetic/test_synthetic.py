"""Synthetic scenes: ground truth agrees with the pixels, streaming is seamless, georeference is
right."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.transform
from typer.testing import CliRunner

from scalemae_det.base.errors import UserError
from scalemae_det.base.geo import gsd_m
from scalemae_det.cli import app
from scalemae_det.synthetic import CLASS_NAMES, make_scene, render_window, write_chips, write_scene


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds.dataset_mask()


def _box_mask(anns, shape, grow=0):
    """Pixels touched by any gt box grown by `grow` px."""
    mask = np.zeros(shape, bool)
    for a in anns:
        x, y, w, h = a["bbox"]
        mask[
            max(int(np.floor(y)) - grow, 0) : int(np.ceil(y + h)) + grow,
            max(int(np.floor(x)) - grow, 0) : int(np.ceil(x + w)) + grow,
        ] = True
    return mask


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    coco = write_scene(path, (384, 320), seed=5, gsd=0.5)
    return path, coco


def test_ground_truth_agrees_with_pixels(scene):
    path, coco = scene
    img, _, _ = _read(path)
    layout = make_scene(384, 320, 0.5, 5)
    background = render_window(dataclasses.replace(layout, objects=()), 0, 0, 320, 384)
    changed = (img != background).any(0)
    anns = coco["annotations"]
    assert {a["category_id"] for a in anns} == {1, 2, 3}
    for a in anns:  # the object fills its box and reaches each of the box's four sides
        x, y, w, h = a["bbox"]
        inside = changed[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))]
        assert inside.mean() > 0.3, a
        assert (
            inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        ), a
    # away from the boxes only shadows change the ground: darker in every band, and near a box
    outside = changed & ~_box_mask(anns, changed.shape, grow=1)
    assert outside.any()
    assert (img[:, outside] <= background[:, outside]).all()
    assert not (changed & ~_box_mask(anns, changed.shape, grow=40)).any()
    # objects never overlap
    b = np.array([a["bbox"] for a in anns])
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    overlap = (
        (x0[:, None] < x1[None])
        & (x0[None] < x1[:, None])
        & (y0[:, None] < y1[None])
        & (y0[None] < y1[:, None])
    )
    assert overlap.sum() == len(anns)  # each box only with itself


def test_blocks_render_like_the_whole(tmp_path):
    a = write_scene(tmp_path / "a.tif", (300, 200), seed=1, block_rows=64, nodata_collar=True)
    b = write_scene(tmp_path / "b.tif", (300, 200), seed=1, block_rows=77, nodata_collar=True)
    img_a, img_b = _read(tmp_path / "a.tif")[0], _read(tmp_path / "b.tif")[0]
    assert np.array_equal(img_a, img_b)
    assert a["annotations"] == b["annotations"]
    layout = make_scene(300, 200, 0.5, 1, nodata_collar=True)
    assert np.array_equal(render_window(layout, 0, 0, 200, 300), img_a)
    assert np.array_equal(render_window(layout, 37, 91, 113, 199), img_a[:, 37:150, 91:290])


def test_georeference(scene):
    path, coco = scene
    _, profile, _ = _read(path)
    t = profile["transform"]
    assert profile["crs"] == rasterio.crs.CRS.from_epsg(32633)
    assert (t.a, t.b, t.d, t.e) == (0.5, 0, 0, -0.5)
    assert gsd_m(profile["crs"], t, 384, 320) == pytest.approx(0.5, rel=0.01)
    assert profile["tiled"] and profile["compress"] == "deflate" and profile["count"] == 3
    assert coco["images"] == [
        {
            "id": 1,
            "file_name": "scene.tif",
            "width": 384,
            "height": 320,
            "gsd": 0.5,
            "crs": "EPSG:32633",
        }
    ]
    assert json.loads(path.with_suffix(".json").read_text()) == coco
    assert [c["name"] for c in coco["categories"]] == list(CLASS_NAMES)
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        xs, ys = rasterio.transform.xy(t, [y, y + h], [x, x + w], offset="ul")
        assert a["bbox_map"] == pytest.approx([xs[0], ys[1], xs[1], ys[0]], abs=1e-6)
        assert a["area"] == pytest.approx(w * h, abs=0.01) and a["iscrowd"] == 0


def test_nodata_collar(tmp_path):
    coco = write_scene(tmp_path / "c.tif", 256, seed=3, nodata_collar=True)
    img, profile, mask = _read(tmp_path / "c.tif")
    assert profile["nodata"] == 0
    empty = (img == 0).all(0)
    assert 0.02 < empty.mean() < 0.5
    assert np.array_equal(mask == 0, empty)
    assert not (empty & _box_mask(coco["annotations"], empty.shape, grow=1)).any()
    rows, cols = np.nonzero(empty)  # the collar hugs the edges
    edge = np.minimum.reduce([cols, 255 - cols, rows, 255 - rows])
    assert edge.max() < 0.25 * 256


def test_seeds(tmp_path):
    a = write_scene(tmp_path / "a.tif", 128, seed=7)
    b = write_scene(tmp_path / "b.tif", 128, seed=7)
    c = write_scene(tmp_path / "c.tif", 128, seed=8)
    img_a, img_b, img_c = (_read(tmp_path / f"{n}.tif")[0] for n in "abc")
    assert np.array_equal(img_a, img_b) and a["annotations"] == b["annotations"]
    assert (img_a != img_c).mean() > 0.5 and a["annotations"] != c["annotations"]


def test_chips(tmp_path):
    from pycocotools.coco import COCO

    labels = write_chips(tmp_path / "chips", 8, size=192, seed=1, gsd=(0.4, 0.8))
    coco = COCO(str(labels))
    gsds = [im["gsd"] for im in coco.dataset["images"]]
    assert len(set(gsds)) == 8 and all(0.4 <= g <= 0.8 for g in gsds)
    counts = np.bincount([a["category_id"] for a in coco.dataset["annotations"]], minlength=4)[1:]
    assert counts.min() >= 3, counts  # every class is there to learn
    for im in coco.dataset["images"]:
        _, profile, _ = _read(labels.parent / im["file_name"])
        assert profile["transform"].a == im["gsd"] and profile["width"] == 192
        assert len(coco.getAnnIds(imgIds=im["id"])) >= 1


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="at least 64"):
        write_scene(tmp_path / "s.tif", 32)
    with pytest.raises(UserError, match="does not exist"):
        write_scene(tmp_path / "nope" / "s.tif", 128)
    with pytest.raises(UserError, match="invalid CRS"):
        write_scene(tmp_path / "s.tif", 128, crs="EPSG:99999")
    with pytest.raises(UserError, match="not projected"):
        write_scene(tmp_path / "s.tif", 128, crs="EPSG:4326")
    with pytest.raises(UserError, match="at least 64"):
        write_chips(tmp_path / "chips", 3, size=16)
    assert list(tmp_path.iterdir()) == []


def test_cli(tmp_path):
    out = tmp_path / "scene.tif"
    result = CliRunner().invoke(
        app, ["synth-scene", "--out", str(out), "--size", "128", "--seed", "2", "--nodata-collar"]
    )
    assert result.exit_code == 0, result.output
    assert (
        out.exists()
        and json.loads(out.with_suffix(".json").read_text())["images"][0]["file_name"]
        == "scene.tif"
    )
    result = CliRunner().invoke(
        app, ["synth-chips", "--out", str(tmp_path / "chips"), "--count", "2"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "chips" / "labels.json").read_text())["images"]) == 2
    exe = Path(sys.executable).parent / "scalemae-det"
    bad = subprocess.run(
        [str(exe), "synth-scene", "--out", str(tmp_path / "bad.tif"), "--size", "10"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'bad.tif'}: --size 10: must be at least 64"
    ]
    assert not (tmp_path / "bad.tif").exists()
