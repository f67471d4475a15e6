"""The xView metric (scalemae_det.metrics.xview_ap) worked by hand, and its official counting."""

import numpy as np
import pytest

from scalemae_det.metrics.coco_ap import evaluate_detections
from scalemae_det.metrics.xview_ap import voc_ap


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
