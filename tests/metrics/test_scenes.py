"""Scene-level scoring (scalemae_det.metrics.scenes, `scalemae-det score`) against pycocotools on a
generated scene."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp
from typer.testing import CliRunner

from helpers.cli import NO_TORCH, REPO
from scalemae_det.cli import app
from scalemae_det.metrics.scenes import read_truth, results_for_truth, score_scenes, stitch_chips
from scalemae_det.runtime.detections import Detections
from scalemae_det.runtime.detector import SceneResult
from scalemae_det.runtime.outputs import coco as coco_results
from scalemae_det.runtime.outputs import geojson
from scalemae_det.runtime.scene import Scene
from scalemae_det.synthetic.writers import write_scene

SIZE, TILE, OVERLAP = 640, 256, 0.2


def _pycocotools(gt: dict, dets: list[dict], max_dets: int) -> tuple[float, float, dict]:
    """AP, AP50 and per-class AP50 straight from pycocotools, at `max_dets` detections per image."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"][:, :, :, 0, -1]
    per_class = {
        c: float(p[0, :, k][p[0, :, k] > -1].mean()) for k, c in enumerate(ev.params.catIds)
    }
    return float(p[p > -1].mean()), float(p[0][p[0] > -1].mean()), per_class


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A synthetic scene, its truth, and noisy detections of it as predict would write them.

    Detections: 80% of the boxes, jittered by up to 15% of their size, scored at random; false
    boxes; and second detections of three objects that a seam of the 256 px, 0.2-overlap tiling
    crosses, and of one that no seam crosses.
    """
    root = tmp_path_factory.mktemp("scene")
    tif = root / "7.tif"
    truth = write_scene(tif, SIZE, seed=3)
    rng = np.random.default_rng(0)
    anns = truth["annotations"]
    boxes, labels, scores = [], [], []
    for a in anns:
        if rng.random() < 0.2:
            continue
        x, y, w, h = a["bbox"]
        jitter = rng.uniform(-0.15, 0.15, 4) * [w, h, w, h]
        boxes.append([x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]])
        labels.append(a["category_id"])
        scores.append(rng.uniform(0.05, 1))
    for _ in range(30):
        x, y = rng.uniform(0, SIZE - 30, 2)
        boxes.append([x, y, x + rng.uniform(8, 30), y + rng.uniform(8, 30)])
        labels.append(int(rng.integers(1, 4)))
        scores.append(rng.uniform(0.05, 1))
    # inner tile edges on both axes: stride round(256 * 0.8) = 205, starts 0, 205, 384 (the last
    # flush with the end), ends 256, 461, 640; the scene's own edges 0 and 640 are no seams
    seams = (205, 256, 384, 461)
    crossed = [
        a
        for a in anns
        if any(a["bbox"][0] < e < a["bbox"][0] + a["bbox"][2] for e in seams)
        and not any(a["bbox"][1] < e < a["bbox"][1] + a["bbox"][3] for e in seams)
    ]
    clear = [
        a
        for a in anns
        if not any(
            a["bbox"][0] < e < a["bbox"][0] + a["bbox"][2]
            or a["bbox"][1] < e < a["bbox"][1] + a["bbox"][3]
            for e in seams
        )
    ]
    for a in [*crossed[:3], clear[0]]:
        x, y, w, h = a["bbox"]
        boxes += [[x, y, x + w, y + h], [x + 0.02 * w, y, x + w, y + h]]  # found, then found again
        labels += [a["category_id"]] * 2
        scores += [0.999, 0.998]
    with rasterio.open(tif) as ds:
        sc = Scene(
            str(tif), ds.width, ds.height, ds.crs, ds.transform, 0.5, [1, 2, 3], None, 1.0, []
        )
    names = [c["name"] for c in sorted(truth["categories"], key=lambda c: c["id"])]
    result = SceneResult(
        sc,
        Detections(np.asarray(boxes), np.asarray(scores, np.float32), np.asarray(labels)),
        names,
        "cpu",
    )
    (root / "7.geojson").write_text(json.dumps(geojson(result)))
    (root / "7.json").write_text(json.dumps(truth))
    (root / "7.results.json").write_text(json.dumps(coco_results(result)))
    return root, tif, truth


def test_score_equals_pycocotools_and_counts_seam_duplicates(scene):
    root, tif, truth = scene
    gt = read_truth(root / "7.json")
    from_geojson = results_for_truth([root / "7.geojson"], gt)
    from_coco = results_for_truth([root / "7.results.json"], gt)
    assert len(from_geojson) == len(from_coco) > len(truth["annotations"]) // 2
    metrics = score_scenes(gt, from_geojson, tile=TILE, overlap=OVERLAP)
    ap, ap50, per_class = _pycocotools(truth, from_geojson, len(from_geojson))
    assert metrics["AP"] == pytest.approx(ap, abs=1e-12) and metrics["AP50"] == pytest.approx(
        ap50, abs=1e-12
    )
    assert 0.3 < metrics["AP50"] < 0.95  # a non-trivial case
    for row in metrics["per_class"]:
        assert row["AP50"] == pytest.approx(per_class[row["id"]], abs=1e-12)
    assert score_scenes(gt, from_coco)["AP"] == pytest.approx(ap, abs=1e-12)
    # the jittered boxes may claim or miss, but each planted second detection is a duplicate
    assert (
        metrics["seam_duplicates"] >= 3 and metrics["duplicates"] >= metrics["seam_duplicates"] + 1
    )
    exact = [d for d in from_geojson if d["score"] >= 0.998]
    planted = score_scenes(gt, exact, tile=TILE, overlap=OVERLAP)
    assert (planted["duplicates"], planted["seam_duplicates"]) == (4, 3)


def test_truth_as_polygons_in_another_crs_scores_the_same(scene):
    """Truth polygons in WGS84 lon/lat, placed in the scene through its own georeference."""
    root, tif, truth = scene
    with rasterio.open(tif) as ds:
        transform, crs = ds.transform, ds.crs
    names = {c["id"]: c["name"] for c in truth["categories"]}
    features = []
    for a in truth["annotations"]:
        x, y, w, h = a["bbox"]
        cols, rows = [x, x, x + w, x + w, x], [y, y + h, y + h, y, y]
        xs, ys = transform * (np.asarray(cols), np.asarray(rows))
        lon, lat = warp(crs, "EPSG:4326", list(xs), list(ys))
        features.append(
            {
                "type": "Feature",
                "properties": {"label": names[a["category_id"]]},
                "geometry": {"type": "Polygon", "coordinates": [list(map(list, zip(lon, lat)))]},
            }
        )
    path = root / "truth.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    gt = read_truth(path, [tif])
    assert len(gt["annotations"]) == len(truth["annotations"])
    dets = results_for_truth([root / "7.geojson"], gt)
    by_pixels = score_scenes(
        read_truth(root / "7.json"),
        results_for_truth([root / "7.geojson"], read_truth(root / "7.json")),
    )
    by_polygons = score_scenes(gt, dets)
    for key in ("AP", "AP50", "xview_mAP"):
        assert by_polygons[key] == pytest.approx(by_pixels[key], abs=1e-6), key

    runner = CliRunner()
    out = root / "m.json"
    result = runner.invoke(
        app,
        [
            "score",
            str(root / "7.geojson"),
            "--truth",
            str(path),
            "--scene",
            str(tif),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["AP"] == pytest.approx(by_pixels["AP"], abs=1e-6)
    missing = runner.invoke(app, ["score", str(root / "7.geojson"), "--truth", str(path)])
    assert missing.exit_code != 0 and "scene rasters" in str(missing.exception)


def test_chips_stitched_and_merged_equal_the_scene():
    """A perfect chip detector (every box clipped to every chip that shows it) scored per scene: the
    seam merge leaves one detection per object, where the chips' union counts the pieces in the
    overlaps as duplicates."""
    rng = np.random.default_rng(4)
    size, chip = 700, 400  # chips at 0 and 300 on each axis (stride 300)
    boxes = []
    while len(boxes) < 40:
        x, y = rng.uniform(0, size - 40, 2)
        w, h = rng.uniform(10, 40, 2)
        if all(
            x + w < b[0] or b[2] < x or y + h < b[1] or b[3] < y for b in boxes
        ):  # objects do not overlap
            boxes.append((x, y, x + w, y + h))
    truth = {
        "images": [{"id": 1, "file_name": "5.tif", "width": size, "height": size}],
        "categories": [{"id": 1, "name": "car"}],
        "annotations": [
            {
                "id": k,
                "image_id": 1,
                "category_id": 1,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "iscrowd": 0,
            }
            for k, b in enumerate(boxes, 1)
        ],
    }
    chips, dets = {}, []
    for cid, (x0, y0) in enumerate(((0, 0), (300, 0), (0, 300), (300, 300)), 10):
        chips[cid] = {
            "id": cid,
            "scene": "5.tif",
            "x0": x0,
            "y0": y0,
            "width": chip,
            "height": chip,
        }
        for k, (bx0, by0, bx1, by1) in enumerate(boxes):
            cx0, cy0 = max(bx0 - x0, 0), max(by0 - y0, 0)
            cx1, cy1 = min(bx1 - x0, chip), min(by1 - y0, chip)
            if cx1 - cx0 > 1 and cy1 - cy0 > 1:
                dets.append(
                    {
                        "image_id": cid,
                        "category_id": 1,
                        "score": 0.9 - k / 100 - cid / 1000,
                        "bbox": [cx0, cy0, cx1 - cx0, cy1 - cy0],
                    }
                )
    naive = [
        {
            **d,
            "image_id": 1,
            "bbox": [
                d["bbox"][0] + chips[d["image_id"]]["x0"],
                d["bbox"][1] + chips[d["image_id"]]["y0"],
                *d["bbox"][2:],
            ],
        }
        for d in dets
    ]
    assert score_scenes(truth, naive)["duplicates"] > 10
    stitched = stitch_chips(dets, chips, truth)
    metrics = score_scenes(truth, stitched)
    assert metrics["duplicates"] == 0 and len(stitched) == len(boxes)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["xview_mAP"] == pytest.approx(1.0)


def test_evaluate_scene_level_scores_stitched_chip_detections(tmp_path, tiny_checkpoint):
    """`evaluate --scene-level` = the chip-level run's detections, stitched by `stitch_chips`,
    scored per scene."""
    from rasterio.transform import from_origin

    from scalemae_det.engine.evaluator import evaluate_checkpoint

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 255, (3, 224, 224), dtype=np.uint8)
    boxes = [
        (10, 12, 40, 30, 1),
        (100, 90, 140, 130, 2),
        (180, 20, 210, 60, 3),
    ]  # the second crosses every chip
    for x0, y0, x1, y1, _ in boxes:
        pixels[:, y0:y1, x0:x1] = 250
    (tmp_path / "chips").mkdir()
    images, annotations = [], []
    for cid, (cx, cy) in enumerate(((0, 0), (96, 0), (0, 96), (96, 96)), 1):
        name = f"s_{cx}_{cy}.tif"
        with rasterio.open(
            tmp_path / "chips" / name,
            "w",
            driver="GTiff",
            width=128,
            height=128,
            count=3,
            dtype="uint8",
            crs="EPSG:32633",
            transform=from_origin(500000 + cx * 0.5, 0 - cy * 0.5, 0.5, 0.5),
        ) as dst:
            dst.write(pixels[:, cy : cy + 128, cx : cx + 128])
        images.append(
            {
                "id": cid,
                "file_name": name,
                "width": 128,
                "height": 128,
                "scene": "s.tif",
                "x0": cx,
                "y0": cy,
            }
        )
        for x0, y0, x1, y1, c in boxes:
            kx0, ky0, kx1, ky1 = (
                max(x0 - cx, 0),
                max(y0 - cy, 0),
                min(x1 - cx, 128),
                min(y1 - cy, 128),
            )
            if kx1 > kx0 and ky1 > ky0:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": cid,
                        "category_id": c,
                        "bbox": [kx0, ky0, kx1 - kx0, ky1 - ky0],
                        "iscrowd": 0,
                    }
                )
    categories = [{"id": k, "name": n} for k, n in enumerate(("vehicle", "building", "ship"), 1)]
    labels = tmp_path / "val.json"
    labels.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    scenes = {
        "images": [{"id": 1, "file_name": "s.tif", "width": 224, "height": 224}],
        "categories": categories,
        "annotations": [
            {
                "id": k,
                "image_id": 1,
                "category_id": c,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": 0,
            }
            for k, (x0, y0, x1, y1, c) in enumerate(boxes, 1)
        ],
    }
    (tmp_path / "val_scenes.json").write_text(json.dumps(scenes))
    common = {"input_size": 128, "device": "cpu", "amp": "off", "num_workers": 0}
    evaluate_checkpoint(
        tiny_checkpoint,
        tmp_path / "chips",
        labels,
        out=tmp_path / "chip.json",
        detections=tmp_path / "chip_dets.json",
        **common,
    )
    metrics = evaluate_checkpoint(
        tiny_checkpoint,
        tmp_path / "chips",
        labels,
        out=tmp_path / "scene.json",
        detections=tmp_path / "scene_dets.json",
        scene_labels=tmp_path / "val_scenes.json",
        **common,
    )
    chip_dets = json.loads((tmp_path / "chip_dets.json").read_text())
    expected = stitch_chips(chip_dets, {img["id"]: img for img in images}, scenes)
    assert len(chip_dets) > len(expected) > 0  # the merge removed the overlaps' repeats
    assert json.loads((tmp_path / "scene_dets.json").read_text()) == json.loads(
        json.dumps(expected)
    )
    assert metrics["level"] == "scene" and metrics["num_images"] == 1
    assert metrics["AP"] == score_scenes(scenes, expected)["AP"]


def test_score_runs_without_torch(scene, tmp_path):
    """`score` on an edge box: torch unimportable, the same AP as pycocotools in this process."""
    root, _, truth = scene
    out = tmp_path / "m.json"
    args = ["score", root / "7.geojson", "--truth", root / "7.json", "--out", out]
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "torch import attempted" not in done.stderr
    dets = results_for_truth([root / "7.geojson"], read_truth(root / "7.json"))
    ap, ap50, _ = _pycocotools(truth, dets, len(dets))
    metrics = json.loads(out.read_text())
    assert metrics["AP"] == pytest.approx(ap, abs=1e-12)
    assert metrics["AP50"] == pytest.approx(ap50, abs=1e-12)
