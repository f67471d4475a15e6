"""COCO AP of detections: pycocotools' AP family, with the xView metric beside it.

Inputs are plain lists of COCO result dicts (image_id, category_id, bbox xywh, score) so that
distributed ranks can gather theirs with `all_gather_object` and concatenate them before one
call here. Everything is numpy/pycocotools: no torch needed to score a results file. The xView
metric and its counting are in `xview_ap`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from scalemae_det.base.rows import coco_results
from scalemae_det.data.labels import read_coco_json
from scalemae_det.metrics.xview_ap import COUNTINGS, XVIEW_NAMES, ClassMatches, xview_class_aps

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # the first six COCOeval stats
MAX_DETECTIONS = (
    300  # the configs' detections_per_image: COCOeval's own cap of 100 would cut recall
)


def load_coco_json(coco_gt: str | os.PathLike | dict) -> dict:
    """A COCO label dict, read from `coco_gt` when it is a path."""
    return coco_gt if isinstance(coco_gt, dict) else read_coco_json(coco_gt)


def detections_to_coco(
    outputs: Sequence[dict], targets: Sequence[dict], category_ids: Sequence[int]
) -> list[dict]:
    """COCO result dicts from model outputs, in the original image's pixels and category ids.

    `outputs[i]` holds `boxes` (xyxy), `scores`, `labels` (1..K) for the image of `targets[i]`;
    `category_ids[k - 1]` is the label file's id of label k. Boxes are divided by the
    target's `box_scale` (what the eval transform multiplied them by), when present.
    Tensors and arrays are both accepted (only `.tolist()` is used).
    """
    results = []
    for out, tgt in zip(outputs, targets, strict=True):
        sx, sy = _box_scale(tgt)
        boxes = np.asarray(out["boxes"].tolist(), np.float64).reshape(-1, 4) / (sx, sy, sx, sy)
        labels = np.asarray(out["labels"].tolist(), np.int64)
        results += coco_results(
            int(tgt["image_id"]),
            boxes,
            out["scores"].tolist(),
            np.asarray(category_ids, np.int64)[labels - 1],
        )
    return results


def _box_scale(target: dict) -> tuple[float, float]:
    scale = target.get("box_scale")
    if scale is None:
        return 1.0, 1.0
    sx, sy = scale.tolist()[:2]
    return sx, sy


def evaluate_detections(
    coco_gt: str | os.PathLike | dict,
    detections: Sequence[dict],
    *,
    ignore_category_ids: Iterable[int] = (),
    iou_threshold: float = 0.5,
    max_dets: int = MAX_DETECTIONS,
    xview_counting: str = "corrected",
    matches: dict[int, ClassMatches] | None = None,
) -> dict:
    """COCO AP family and the xView metric of `detections` against the labels `coco_gt`.

    Detections with score <= 0 are dropped first (as the official xView scorer does). Returns a
    JSON-ready dict: AP, AP50, AP75, APs, APm, APl (pycocotools, `max_dets` detections per image;
    None where pycocotools has no ground truth), `xview_mAP` (mean per-class VOC AP at
    `iou_threshold` over the classes that get one, leaving out `ignore_category_ids`; counting as
    `xview_counting` says, see `xview_ap`'s module doc; named in `xview_metric`), and
    `per_class`: one row per category with its id, name, number of ground-truth boxes, AP50 and
    xView AP (None where the class has no (counted) ground truth).
    """
    if xview_counting not in COUNTINGS:
        raise ValueError(f"xview_counting must be one of {COUNTINGS}, got {xview_counting!r}")
    gt = _with_areas(load_coco_json(coco_gt))
    ignore = set(ignore_category_ids)
    detections = [d for d in detections if d["score"] > 0]
    coco_stats, ap50 = _coco_eval(gt, detections, max_dets)
    xview_ap = xview_class_aps(
        gt, detections, iou_threshold, counting=xview_counting, matches=matches
    )
    num_gt = defaultdict(int)
    for ann in gt.get("annotations", []):
        num_gt[ann["category_id"]] += not ann.get("iscrowd", 0)
    per_class = [
        {
            "id": cat["id"],
            "name": cat.get("name", str(cat["id"])),
            "num_gt": num_gt[cat["id"]],
            "AP50": ap50.get(cat["id"]),
            "xview_AP": xview_ap.get(cat["id"]),
        }
        for cat in sorted(gt["categories"], key=lambda c: c["id"])
    ]
    scored = [xview_ap[c] for c in xview_ap if c not in ignore]
    return {
        **coco_stats,
        "xview_mAP": float(np.mean(scored)) if scored else None,
        "xview_metric": XVIEW_NAMES[xview_counting],
        "max_detections": max_dets,
        "num_detections": len(detections),
        "num_images": len(gt["images"]),
        "per_class": per_class,
    }


def _with_areas(gt: dict) -> dict:
    """pycocotools needs `area` on every annotation (for AP small/medium/large); fill in w*h."""
    if all("area" in ann for ann in gt.get("annotations", [])):
        return gt
    gt = {**gt, "annotations": [dict(ann) for ann in gt["annotations"]]}
    for ann in gt["annotations"]:
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    return gt


def _coco_eval(gt: dict, detections: Sequence[dict], max_dets: int) -> tuple[dict, dict]:
    """COCOeval's summary stats and per-category AP50 (None for a category without gt)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
        coco_gt = COCO()
        coco_gt.dataset = {"annotations": [], **copy.deepcopy(gt)}
        coco_gt.createIndex()
        if detections:  # loadRes adds fields to the dicts it gets: give it copies
            coco_dt = coco_gt.loadRes(copy.deepcopy(list(detections)))
        else:  # loadRes cannot take an empty list; an empty result set scores 0
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": gt["images"],
                "categories": gt["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    # precision: [iou thresholds, recall points, categories, area ranges, max dets]; iou 0.5 is
    # the first threshold, area "all" the first range, the largest max-dets the last. The stats
    # are COCOeval.summarize's, read at `max_dets`: summarize itself reads AP at a hard-coded 100
    # detections and reports -1 when maxDets lacks 100.
    all_precision = ev.eval["precision"]
    iou_index = {t: int(np.argmin(np.abs(ev.params.iouThrs - t))) for t in (0.5, 0.75)}
    parts = {
        "AP": all_precision[:, :, :, 0, -1],
        "AP50": all_precision[iou_index[0.5], :, :, 0, -1],
        "AP75": all_precision[iou_index[0.75], :, :, 0, -1],
        "APs": all_precision[:, :, :, 1, -1],
        "APm": all_precision[:, :, :, 2, -1],
        "APl": all_precision[:, :, :, 3, -1],
    }
    # COCOeval marks an undefined value (no ground truth, e.g. in an area range) -1; JSON says null,
    # as for the per-class APs and the xView mean, so that no reader averages a -1 in
    stats = {name: float(v[v > -1].mean()) if (v > -1).any() else None for name, v in parts.items()}
    precision = all_precision[0, :, :, 0, -1]
    ap50 = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, k]
        ap50[cat_id] = float(p[p > -1].mean()) if (p > -1).any() else None
    return stats, ap50


def scene_results(
    result, image_id: int, categories: Sequence[dict], model_classes: Sequence[str]
) -> list[dict]:
    """COCO result dicts of a runtime `SceneResult` (scene pixels), keyed to a label file's image id
    and category ids (matched to the model's classes by name)."""
    by_name = {c["name"]: c["id"] for c in categories}
    det = result.detections
    return coco_results(
        image_id,
        det.boxes,
        det.scores,
        [by_name[model_classes[k - 1]] for k in det.labels.tolist()],
    )
