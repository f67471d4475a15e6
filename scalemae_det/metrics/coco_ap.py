"""Detection metrics: pycocotools' AP family and the xView challenge metric.

Inputs are plain lists of COCO result dicts (image_id, category_id, bbox xywh, score) so that
distributed ranks can gather theirs with `all_gather_object` and concatenate them before one
call here. Everything is numpy/pycocotools: no torch needed to score a results file.

The xView metric follows the official scorer (DIUx-xView/xView1_baseline, scoring/score.py and
matching.py): per-class VOC AP at IoU 0.5 with greedy matching, detections with score <= 0
dropped, the mean over classes. It differs in one thing on purpose. The official scorer adds a
class's ground truth of an image to its count only when that image has a detection of the class
(`num_gt_per_cls[i] += len(gt_matched)`, and `greedy_match` returns no ground truth when there is
no detection), so objects in images where the class was never predicted are not missed, they do
not exist; a class never predicted where it has boxes gets NaN and leaves the mean. That inflates
recall. "xView AP (corrected)", the default here, counts every ground-truth box;
`xview_counting="official"` reproduces the official counting, to compare with the leaderboard.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from scalemae_det.base.atomic import atomic_path
from scalemae_det.base.rows import coco_results
from scalemae_det.data.labels import read_coco_json

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # the first six COCOeval stats
MAX_DETECTIONS = (
    300  # the configs' detections_per_image: COCOeval's own cap of 100 would cut recall
)
COUNTINGS = ("corrected", "official")
XVIEW_NAMES = {"corrected": "xView AP (corrected)", "official": "xView AP (official counting)"}


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
    `xview_counting` says, see the module doc; named in `xview_metric`), and `per_class`: one row
    per category with its id, name, number of ground-truth boxes, AP50 and xView AP (None where
    the class has no (counted) ground truth).
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
    # as for
    # the per-class APs and the xView mean, so that no reader averages a -1 in
    stats = {name: float(v[v > -1].mean()) if (v > -1).any() else None for name, v in parts.items()}
    precision = all_precision[0, :, :, 0, -1]
    ap50 = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, k]
        ap50[cat_id] = float(p[p > -1].mean()) if (p > -1).any() else None
    return stats, ap50


@dataclass
class ClassMatches:
    """One category's detections matched greedily to its ground truth (see `greedy_matches`)."""

    detections: list[dict]  # by decreasing score
    tp: np.ndarray  # (D,) bool: claimed a ground-truth box
    best: list[
        tuple[int, int] | None
    ]  # (image id, box index) of the best box when its IoU reached the threshold
    gt_boxes: dict[int, np.ndarray] = field(default_factory=dict)  # image id -> (N, 4) xyxy

    @property
    def duplicate(self) -> np.ndarray:
        """Detections whose best box reached the threshold but was claimed already: a second
        detection of one object."""
        return np.array([b is not None and not t for b, t in zip(self.best, self.tp)], bool)


def greedy_matches(
    gt: dict, detections: Sequence[dict], iou_threshold: float = 0.5
) -> dict[int, ClassMatches]:
    """The xView scorer's greedy matching, per category of the ground truth or the detections.

    Within a category, detections are taken by decreasing score; each is compared with the
    ground-truth boxes of its image and claims the one of highest IoU if that IoU reaches
    `iou_threshold` and the box is still unclaimed, else it is a false positive (the official
    matcher does not fall back to the next best box). Crowd annotations are left out.
    """
    gt_boxes: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for ann in gt.get("annotations", []):
        if not ann.get("iscrowd", 0):
            gt_boxes[ann["category_id"]][ann["image_id"]].append(xyxy(ann["bbox"]))
    dets_by_cat: dict[int, list[dict]] = defaultdict(list)
    for det in detections:
        dets_by_cat[det["category_id"]].append(det)

    out = {}
    for cat_id in set(gt_boxes) | set(dets_by_cat):
        boxes = {
            img: np.asarray(b, dtype=np.float64) for img, b in gt_boxes.get(cat_id, {}).items()
        }
        claimed = {img: np.zeros(len(b), dtype=bool) for img, b in boxes.items()}
        dets = sorted(dets_by_cat.get(cat_id, []), key=lambda d: -d["score"])
        tp = np.zeros(len(dets), dtype=bool)
        best_of: list[tuple[int, int] | None] = [None] * len(dets)
        for i, det in enumerate(dets):
            img_boxes = boxes.get(det["image_id"])
            if img_boxes is None:
                continue
            tp[i], best = claim(
                np.asarray(xyxy(det["bbox"])), img_boxes, claimed[det["image_id"]], iou_threshold
            )
            if best is not None:
                best_of[i] = (det["image_id"], best)
        out[cat_id] = ClassMatches(dets, tp, best_of, boxes)
    return out


def xview_class_aps(
    gt: dict,
    detections: Sequence[dict],
    iou_threshold: float = 0.5,
    counting: str = "corrected",
    matches: dict[int, ClassMatches] | None = None,
) -> dict[int, float]:
    """Per-category VOC all-point AP over `greedy_matches`.

    "corrected": every category with ground truth gets an AP (0 when it has no detection).
    "official": a category's boxes in an image count only when the image has a detection of it,
    and a category with no box counted gets no AP (see the module doc). (The official scorer
    matches in the order of each image's file; by score here, the same for files sorted by score,
    as predict writes them.) `matches`: `greedy_matches(gt, detections, iou_threshold)` when the
    caller
    has it already.
    """
    aps = {}
    matches = greedy_matches(gt, detections, iou_threshold) if matches is None else matches
    for cat_id, m in matches.items():
        if not m.gt_boxes:
            continue
        if counting == "official":
            predicted = {d["image_id"] for d in m.detections}
            n_gt = sum(len(b) for img, b in m.gt_boxes.items() if img in predicted)
            if n_gt == 0:
                continue
        else:
            n_gt = sum(len(b) for b in m.gt_boxes.values())
        aps[cat_id] = voc_ap(m.tp, n_gt)
    return aps


def claim(
    box: np.ndarray, targets: np.ndarray, claimed: np.ndarray, iou_threshold: float = 0.5
) -> tuple[bool, int | None]:
    """The xView scorer's matching step: `box` claims the target of highest IoU when that IoU
    reaches
    `iou_threshold` and the target is still unclaimed (`claimed` is updated). Call it for detections
    in decreasing score order. Returns (true positive, index of that best target, or None when its
    IoU
    is below the threshold)."""
    if not len(targets):
        return False, None
    ious = box_iou(box[None], targets)[0]
    best = int(ious.argmax())
    if ious[best] < iou_threshold:
        return False, None
    hit = not claimed[best]
    claimed[best] = True
    return hit, best


def voc_ap(tp: np.ndarray, n_gt: int) -> float:
    """All-point interpolated AP of detections flagged `tp` (sorted by decreasing score).

    The area under the precision-recall curve after making precision non-increasing in
    recall (each point takes the best precision at any higher recall).
    """
    tp = np.asarray(tp, dtype=np.float64)
    if n_gt == 0 or tp.size == 0:
        return 0.0
    cum_tp = np.cumsum(tp)
    recall = np.concatenate([[0.0], cum_tp / n_gt])
    precision = cum_tp / np.arange(1, tp.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes (continuous coordinates, no +1)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def xyxy(bbox: Sequence[float]) -> list[float]:
    """COCO xywh -> xyxy."""
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def scene_results(
    result, image_id: int, categories: Sequence[dict], model_classes: Sequence[str]
) -> list[dict]:
    """COCO result dicts of a runtime `SceneResult` (scene pixels), keyed to a label file's image id
    and
    category ids (matched to the model's classes by name)."""
    by_name = {c["name"]: c["id"] for c in categories}
    det = result.detections
    return coco_results(
        image_id,
        det.boxes,
        det.scores,
        [by_name[model_classes[k - 1]] for k in det.labels.tolist()],
    )


def runtime_ap50(
    model: str | os.PathLike,
    labels: str | os.PathLike,
    images: str | os.PathLike,
    provider: str = "auto",
) -> float:
    """COCO AP50 of an exported model run by the runtime over every image of a COCO label file."""
    from scalemae_det.runtime.detector import Detector

    gt = load_coco_json(labels)
    detector = Detector(model, provider)
    dets = []
    for image in gt["images"]:
        result = detector.detect_scene(os.path.join(images, image["file_name"]))
        dets += scene_results(result, image["id"], gt["categories"], detector.metadata.class_names)
    return evaluate_detections(gt, dets, max_dets=max(100, len(dets)))["AP50"]


def write_results(path: str | os.PathLike, results: dict | list) -> None:
    """Write metrics or detections as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1))


def print_metrics(metrics: dict, console=None) -> None:
    """The summary line and the per-class table of `evaluate_detections`' result, with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    summary = "  ".join(
        [
            *(f"{k} {fmt(metrics[k])}" for k in COCO_METRICS),
            f"{metrics.get('xview_metric', XVIEW_NAMES['corrected'])} {fmt(metrics['xview_mAP'])}",
        ]
    )
    table = Table(title="per-class AP at IoU 0.5")
    for col, justify in (
        ("id", "right"),
        ("class", "left"),
        ("gt boxes", "right"),
        ("AP50 (COCO)", "right"),
        (metrics.get("xview_metric", XVIEW_NAMES["corrected"]), "right"),
    ):
        table.add_column(col, justify=justify)
    for row in metrics["per_class"]:
        table.add_row(
            str(row["id"]), row["name"], str(row["num_gt"]), fmt(row["AP50"]), fmt(row["xview_AP"])
        )
    console.print(table)
    console.print(summary)
