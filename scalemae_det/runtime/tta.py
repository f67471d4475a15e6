"""Test-time views: each tile run as it is and mirrored, the views' detections fused into one set.

A view is a symmetry of the square tile: transposed or not, then mirrored left-right or not, then
top-bottom or not. `VIEWS` names the sets predict offers:

- `none`: the tile alone (one run a tile);
- `flip2`: and its left-right mirror (two runs);
- `flip4`: and its top-bottom mirror and both mirrors, a half turn (four runs);
- `d8`: the eight symmetries of the square, the four above each transposed too (eight runs).

Each view's boxes are mapped back to the tile's own pixels (`unview`, the inverse of `view`), then
the views are fused per class by weighted box fusion (Solovyev, Wang and Gabruseva, "Weighted
boxes fusion: Ensembling boxes from different object detection models", arXiv:1910.13302,
section 3), in four rules:

1. every view's boxes are pooled and visited by score, highest first (ties: by view, then by
   the order the view gave them);
2. a box joins the cluster of its class whose fused box it overlaps most, if that IoU exceeds
   `iou_threshold`; otherwise it starts a cluster;
3. a cluster's fused box is the score-weighted mean of its boxes' corners, brought up to date as
   each box joins, so rule 2 compares against the fused box so far;
4. a cluster's score is the mean of its boxes' scores times min(boxes, views) / views: an object
   found in one view of four keeps a quarter of its score, one found in all keeps its mean.

The fused scores are what the score threshold then applies to (detector.py).
"""

from __future__ import annotations

import numpy as np

from scalemae_det.base import checks
from scalemae_det.base.metadata import DEFAULT_TTA_IOU
from scalemae_det.runtime.detections import Detections, box_iou

# name -> views, each (transpose, mirror left-right, mirror top-bottom); the first is the identity
VIEWS: dict[str, tuple[tuple[bool, bool, bool], ...]] = {
    "none": ((False, False, False),),
    "flip2": ((False, False, False), (False, True, False)),
    "flip4": (
        (False, False, False),
        (False, True, False),
        (False, False, True),
        (False, True, True),
    ),
    "d8": tuple((t, h, v) for t in (False, True) for v in (False, True) for h in (False, True)),
}


def check(name: str, iou_threshold: float) -> None:
    """The view set and the fusion threshold, checked before any work."""
    checks.choice("tta", name, VIEWS)
    checks.number("tta_iou", iou_threshold, lo=0, hi=1, lo_open=True, hi_open=True)


def view(images: np.ndarray, which: tuple[bool, bool, bool]) -> np.ndarray:
    """(N, C, T, T) tiles as view `which` shows them (a contiguous copy unless the identity)."""
    transpose, mirror_x, mirror_y = which
    out = images.transpose(0, 1, 3, 2) if transpose else images
    if mirror_x:
        out = out[..., ::-1]
    if mirror_y:
        out = out[..., ::-1, :]
    return np.ascontiguousarray(out) if any(which) else images


def unview(boxes: np.ndarray, which: tuple[bool, bool, bool], tile: int) -> np.ndarray:
    """(N, 4) xyxy boxes found in view `which` of a `tile`-pixel tile -> the tile's own pixels:
    the mirrors undone, then the transpose (view's steps in reverse)."""
    transpose, mirror_x, mirror_y = which
    x0, y0, x1, y1 = (boxes[:, k] for k in range(4))
    if mirror_x:
        x0, x1 = tile - x1, tile - x0
    if mirror_y:
        y0, y1 = tile - y1, tile - y0
    if transpose:
        x0, y0, x1, y1 = y0, x0, y1, x1
    return np.stack([x0, y0, x1, y1], axis=1).astype(boxes.dtype, copy=False)


def fuse(views: list[Detections], iou_threshold: float = DEFAULT_TTA_IOU) -> Detections:
    """The views' detections of one tile (same pixels) fused by the module's rules 1-4."""
    pooled = Detections.concat(views)
    n_views = len(views)
    if len(pooled) == 0 or n_views == 1:
        return pooled
    view_of = np.concatenate([np.full(len(v), k) for k, v in enumerate(views)])
    order = np.lexsort((np.arange(len(pooled)), view_of, -pooled.scores))  # rule 1
    boxes = pooled.boxes.astype(np.float64)
    scores = pooled.scores.astype(np.float64)
    fused_boxes, fused_scores, fused_labels = [], [], []
    for label in np.unique(pooled.labels):
        mine = order[pooled.labels[order] == label]
        weighted = np.zeros((len(mine), 4))  # per cluster: sum of score x corners
        total = np.zeros(len(mine))  # sum of scores
        count = np.zeros(len(mine), int)
        fused = np.zeros((len(mine), 4))
        k = 0  # clusters so far
        for i in mine:
            best = -1
            if k:
                overlaps = box_iou(boxes[i : i + 1], fused[:k])[0]
                best = int(np.argmax(overlaps))
                if overlaps[best] <= iou_threshold:  # rule 2
                    best = -1
            if best < 0:
                best, k = k, k + 1
            weighted[best] += scores[i] * boxes[i]  # rule 3
            total[best] += scores[i]
            count[best] += 1
            fused[best] = weighted[best] / total[best]
        fused_boxes.append(fused[:k])
        mean = total[:k] / count[:k]
        fused_scores.append(mean * np.minimum(count[:k], n_views) / n_views)  # rule 4
        fused_labels.append(np.full(k, label))
    return Detections(
        np.concatenate(fused_boxes).astype(pooled.boxes.dtype),
        np.concatenate(fused_scores).astype(pooled.scores.dtype),
        np.concatenate(fused_labels).astype(pooled.labels.dtype),
    )


def run_views(
    run, images: np.ndarray, name: str, iou_threshold: float = DEFAULT_TTA_IOU
) -> list[Detections]:
    """`run` (images -> detections per tile, as Session.run) over every view of `name`, fused per
    tile; with `none`, `run(images)` itself."""
    which = VIEWS[name]
    if len(which) == 1:
        return run(images)
    tile = images.shape[-1]
    per_view = []
    for w in which:
        found = run(view(images, w))
        per_view.append([Detections(unview(d.boxes, w, tile), d.scores, d.labels) for d in found])
    return [fuse(list(views), iou_threshold) for views in zip(*per_view)]
