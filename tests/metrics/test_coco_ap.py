"""Evaluation: pycocotools agreement, the xView metric by hand, result conversion and writing."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from helpers.coco import random_dataset
from scalemae_det.base.errors import UserError
from scalemae_det.metrics.coco_ap import detections_to_coco, evaluate_detections


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
    gt, dets = random_dataset(np.random.default_rng(seed))
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
    gt, _ = random_dataset(np.random.default_rng(2))
    metrics = evaluate_detections(gt, [])
    assert metrics["AP"] == 0 and metrics["AP50"] == 0 and metrics["xview_mAP"] == 0


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


def test_label_file_not_json(tmp_path):
    bad = tmp_path / "labels.json"
    bad.write_text("not json {")
    with pytest.raises(UserError, match="labels.json: not a JSON file"):
        evaluate_detections(bad, [])


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
