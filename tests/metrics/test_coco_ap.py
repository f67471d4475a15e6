"""Evaluation: pycocotools agreement, the xView metric by hand, result conversion and writing."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from scalemae_det.base.errors import UserError
from scalemae_det.metrics.coco_ap import (
    detections_to_coco,
    evaluate_detections,
    print_metrics,
    voc_ap,
    write_results,
)


def _random_dataset(rng, n_images=6, cat_ids=(3, 7, 12)):
    images = [
        {"id": 100 + i, "file_name": f"{i}.png", "width": 400, "height": 300}
        for i in range(n_images)
    ]
    anns, dets = [], []
    for img in images:
        for _ in range(rng.integers(0, 8)):
            w, h = rng.uniform(4, 150, 2)
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 300 - h)
            cat = int(rng.choice(cat_ids))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            if rng.uniform() < 0.8:  # a detection near the object, sometimes of the wrong class
                jitter = rng.normal(0, 0.1 * min(w, h), 4)
                dets.append(
                    {
                        "image_id": img["id"],
                        "score": float(rng.uniform()),
                        "category_id": cat if rng.uniform() < 0.85 else int(rng.choice(cat_ids)),
                        "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
                    }
                )
        for _ in range(rng.integers(0, 3)):  # false alarms
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": int(rng.choice(cat_ids)),
                    "bbox": [*rng.uniform(0, 250, 2), *rng.uniform(5, 50, 2)],
                    "score": float(rng.uniform()),
                }
            )
    cats = [{"id": c, "name": f"class{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _pycocotools_direct(gt_path, dets, cat_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(dets))), "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_metrics_equal_pycocotools(tmp_path, seed):
    gt, dets = _random_dataset(np.random.default_rng(seed))
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    dets_before = json.dumps(dets)

    metrics = evaluate_detections(gt_path, dets)

    stats = _pycocotools_direct(gt_path, dets)
    for name, value in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), stats):
        assert metrics[name] == pytest.approx(float(value), abs=1e-12), name
    assert 0 < metrics["AP50"] < 1  # a non-trivial case
    for row in metrics["per_class"]:  # per-class AP50 = pycocotools restricted to that class
        assert row["AP50"] == pytest.approx(_pycocotools_direct(gt_path, dets, [row["id"]])[1])
    assert json.dumps(dets) == dets_before  # the caller's detections are left untouched
    assert evaluate_detections(gt, dets)["AP"] == metrics["AP"]  # dict input too


def test_no_detections_scores_zero():
    gt, _ = _random_dataset(np.random.default_rng(2))
    metrics = evaluate_detections(gt, [])
    assert metrics["AP"] == 0 and metrics["AP50"] == 0 and metrics["xview_mAP"] == 0


def _box(x0, y0, x1, y1):
    return [x0, y0, x1 - x0, y1 - y0]


def test_xview_metric_hand_worked():
    # Class 7: image 1 holds A=(0,0,10,10) and B=(2,0,12,10); image 2 holds C=(20,20,40,40).
    # Detections by decreasing score:
    #   d1 0.9 = A exactly                         -> TP (claims A)
    #   d2 0.8 far from everything                 -> FP
    #   d3 0.7 (0.5,0,10.5,10): IoU A 95/105=0.90, IoU B 85/115=0.74. Its best match A is
    #          already claimed -> FP (the xView scorer does not fall back to B)
    #   d4 0.6 (22,20,42,40): IoU C 360/440=0.82    -> TP
    # TP/FP = T F F T; with 3 ground truths: precision 1, 1/2, 1/3, 1/2 at recall
    # 1/3, 1/3, 1/3, 2/3. Non-increasing envelope 1, 1/2, 1/2, 1/2, so
    # AP = 1/3 * 1 + (2/3 - 1/3) * 1/2 = 1/2.
    # Class 9: one box, no detection -> AP 0. Class 11: a detection, no box -> not scored.
    # Class 13: one box found exactly -> AP 1, but it is ignored in the mean.
    # xView mAP = mean(1/2, 0) = 1/4; without ignoring class 13, mean(1/2, 0, 1) = 1/2.
    anns = [
        (1, 7, (0, 0, 10, 10)),
        (1, 7, (2, 0, 12, 10)),
        (2, 7, (20, 20, 40, 40)),
        (2, 9, (5, 5, 9, 9)),
        (1, 13, (30, 30, 50, 50)),
    ]
    gt = {
        "images": [{"id": 1, "width": 64, "height": 64}, {"id": 2, "width": 64, "height": 64}],
        "categories": [{"id": c, "name": f"c{c}"} for c in (7, 9, 11, 13)],
        "annotations": [
            {"id": i, "image_id": img, "category_id": c, "bbox": _box(*b), "iscrowd": 0}
            for i, (img, c, b) in enumerate(anns, 1)
        ],
    }
    dets = [
        (1, 7, 0.9, (0, 0, 10, 10)),
        (1, 7, 0.8, (50, 50, 60, 60)),
        (1, 7, 0.7, (0.5, 0, 10.5, 10)),
        (2, 7, 0.6, (22, 20, 42, 40)),
        (2, 11, 0.9, (0, 0, 5, 5)),
        (1, 13, 0.5, (30, 30, 50, 50)),
    ]
    dets = [
        {"image_id": img, "category_id": c, "score": s, "bbox": _box(*b)} for img, c, s, b in dets
    ]

    metrics = evaluate_detections(gt, dets, ignore_category_ids=[13])
    per_class = {row["id"]: row for row in metrics["per_class"]}
    assert per_class[7]["xview_AP"] == pytest.approx(0.5)
    assert per_class[9]["xview_AP"] == 0.0
    assert per_class[11]["xview_AP"] is None and per_class[11]["num_gt"] == 0
    assert per_class[13]["xview_AP"] == pytest.approx(1.0)
    assert metrics["xview_mAP"] == pytest.approx(0.25)
    assert evaluate_detections(gt, dets)["xview_mAP"] == pytest.approx(0.5)


def test_voc_ap_perfect_and_empty():
    assert voc_ap(np.array([True, True]), 2) == 1.0
    assert voc_ap(np.array([True, True]), 4) == 0.5  # half the boxes found, never wrong
    assert voc_ap(np.array([], dtype=bool), 3) == 0.0


def test_detections_to_coco_undoes_eval_resize_and_maps_ids():
    outputs = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]),
            "scores": torch.tensor([0.7]),
            "labels": torch.tensor([2]),
        }
    ]
    targets = [{"image_id": 42, "box_scale": torch.tensor([0.5, 0.25, 0.5, 0.25])}]
    (res,) = detections_to_coco(outputs, targets, category_ids=[11, 17])
    assert res["image_id"] == 42 and res["category_id"] == 17
    assert res["bbox"] == pytest.approx([20.0, 80.0, 40.0, 160.0])
    assert res["score"] == pytest.approx(0.7)


def test_write_results_and_table(tmp_path):
    gt, dets = _random_dataset(np.random.default_rng(3))
    metrics = evaluate_detections(gt, dets)
    out = tmp_path / "metrics.json"
    write_results(out, metrics)
    assert json.loads(out.read_text()) == metrics
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind

    from rich.console import Console

    console = Console(file=io.StringIO(), width=120)
    print_metrics(metrics, console)
    text = console.file.getvalue()
    assert "class7" in text and f"{metrics['AP']:.3f}" in text


def test_label_file_not_json(tmp_path):
    bad = tmp_path / "labels.json"
    bad.write_text("not json {")
    with pytest.raises(UserError, match="labels.json: not a JSON file"):
        evaluate_detections(bad, [])


def test_official_xview_counting_differs_from_the_corrected_one_hand_worked():
    """Two images; classes 1, 2, 3 (the official scorer, DIUx-xView/xView1_baseline
    scoring/score.py).

    Ground truth: image 1 holds a1 (class 1) and c1 (class 3); image 2 holds a2 (class 1) and b2
    (class 2).
    Detections: image 1: a1 exactly (0.9), a false class-1 box (0.7), c1 exactly but score 0
    (dropped,
    as the official scorer keeps only score > 0); image 2: b2 exactly (0.8).
    Corrected: class 1 has 2 boxes, TP then FP: precision 1 at recall 1/2 -> AP 1/2; class 2 AP 1;
    class 3 has a box and no (kept) detection -> AP 0. Mean (1/2 + 1 + 0) / 3 = 1/2.
    Official: image 2 has no class-1 detection, so a2 is not counted: class 1 has 1 box, found first
    -> AP 1; class 2 AP 1; class 3 has no box counted (no detection anywhere) -> no AP, out of the
    mean.
    Mean (1 + 1) / 2 = 1. Had the score-0 detection been kept, class 3 would score 1 in both.
    """
    boxes = {
        "a1": (0, 0, 10, 10),
        "c1": (30, 30, 50, 50),
        "a2": (5, 5, 20, 20),
        "b2": (40, 0, 60, 12),
    }
    anns = [(1, 1, "a1"), (1, 3, "c1"), (2, 1, "a2"), (2, 2, "b2")]
    gt = {
        "images": [{"id": 1, "width": 64, "height": 64}, {"id": 2, "width": 64, "height": 64}],
        "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)],
        "annotations": [
            {"id": i, "image_id": img, "category_id": c, "bbox": _box(*boxes[b]), "iscrowd": 0}
            for i, (img, c, b) in enumerate(anns, 1)
        ],
    }
    dets = [
        (1, 1, 0.9, boxes["a1"]),
        (1, 1, 0.7, (50, 50, 60, 60)),
        (1, 3, 0.0, boxes["c1"]),
        (2, 2, 0.8, boxes["b2"]),
    ]
    dets = [
        {"image_id": img, "category_id": c, "score": s, "bbox": _box(*b)} for img, c, s, b in dets
    ]

    corrected = evaluate_detections(gt, dets)
    official = evaluate_detections(gt, dets, xview_counting="official")
    assert [r["xview_AP"] for r in corrected["per_class"]] == pytest.approx([0.5, 1.0, 0.0])
    assert (
        corrected["xview_mAP"] == pytest.approx(0.5)
        and corrected["xview_metric"] == "xView AP (corrected)"
    )
    assert [r["xview_AP"] for r in official["per_class"]][:2] == pytest.approx([1.0, 1.0])
    assert official["per_class"][2]["xview_AP"] is None
    assert official["xview_mAP"] == pytest.approx(1.0)
    assert corrected["num_detections"] == 3  # the score-0 detection is not scored
    # pycocotools sees the same three detections: class 3 gets AP50 0, not 1
    assert corrected["per_class"][2]["AP50"] == 0.0


def test_coco_cap_is_the_models_300_detections_per_image():
    """pycocotools keeps the top 100 per image unless told; a tile holds more objects than that."""
    n = 150
    gt = {
        "images": [{"id": 1, "width": 2000, "height": 2000}],
        "categories": [{"id": 1, "name": "car"}],
        "annotations": [
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [13 * k, 5, 10, 10],
                "iscrowd": 0,
            }
            for k in range(n)
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "score": 1 - k / 1000, "bbox": [13 * k, 5, 10, 10]}
        for k in range(n)
    ]
    assert evaluate_detections(gt, dets)["AP50"] == pytest.approx(1.0)
    assert evaluate_detections(gt, dets, max_dets=100)["AP50"] == pytest.approx(100 / n, abs=0.01)
