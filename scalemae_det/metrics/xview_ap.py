"""The xView challenge metric: per-class VOC AP at an IoU threshold over greedy matching.

It follows the official scorer (DIUx-xView/xView1_baseline, scoring/score.py and matching.py):
per-class VOC AP at IoU 0.5 with greedy matching, detections with score <= 0 dropped (by the
caller, `coco_ap.evaluate_detections`), the mean over classes. It differs in one thing on purpose.
The official scorer adds a class's ground truth of an image to its count only when that image has
a detection of the class (`num_gt_per_cls[i] += len(gt_matched)`, and `greedy_match` returns no
ground truth when there is no detection), so objects in images where the class was never
predicted are not missed, they do not exist; a class never predicted where it has boxes gets NaN
and leaves the mean. That inflates recall. "xView AP (corrected)", the default here, counts every
ground-truth box; `counting="official"` reproduces the official counting, to compare with the
leaderboard.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scalemae_det.runtime.detections import box_iou

COUNTINGS = ("corrected", "official")
XVIEW_NAMES = {"corrected": "xView AP (corrected)", "official": "xView AP (official counting)"}


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
    "official": a category's boxes in an image count only when the image has a detection of it, and
    a category with no box counted gets no AP (see the module doc). (The official scorer matches in
    the order of each image's file; by score here, the same for files sorted by score, as predict
    writes them.) `matches`: `greedy_matches(gt, detections, iou_threshold)` when the caller has it
    already.
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


def xyxy(bbox: Sequence[float]) -> list[float]:
    """COCO xywh -> xyxy."""
    x, y, w, h = bbox
    return [x, y, x + w, y + h]
