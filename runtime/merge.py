"""Merge detections from overlapping tiles so that an object cut by a seam is reported once.

Two rules, both between detections of the same class from different tiles (the model already ran
its own NMS inside each tile, which is left alone):

1. a box touching an inner tile edge (so perhaps showing part of its object) is dropped when a
   box from another tile covers it (intersection over its own area >= threshold) and saw more:
   that box touches no inner edge, or is larger (an object lying exactly between two tile edges
   touches edges in every tile that sees it whole);
2. greedy NMS by score over what remains, matching by IoU or by intersection over the smaller box
   ("ios", which also catches a part inside a whole).

Candidate pairs come from a sweep by x within horizontal bands, so the cost follows the number of
nearby pairs, not the square of the number of detections.
"""

from __future__ import annotations

import numpy as np

METRICS = ("iou", "ios")
_CHUNK = 1 << 16  # candidate pairs examined at a time, bounding memory on huge scenes
_GROUP = 1 << 15  # boxes (by their top band) swept at a time


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def overlapping_pairs(boxes: np.ndarray, labels: np.ndarray, tiles: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, intersection area) for boxes of one class from different tiles that overlap.

    Boxes are put in horizontal bands at least as tall as the tallest box (a box lands in the one
    or two bands it spans) and swept by x within each band; a pair is reported by the band holding
    the top of its intersection, so once. Bands are swept in groups holding about _GROUP boxes each,
    so the sweep's working arrays stay the same size however many boxes the scene has.
    """
    height = max(1.0, float(np.max(boxes[:, 3] - boxes[:, 1], initial=0)))
    first = np.floor(boxes[:, 1] / height).astype(np.int64)
    last = np.floor(boxes[:, 3] / height).astype(np.int64)
    stride = float(np.max(boxes[:, 2], initial=0)) + 1  # band * stride + x orders by band, then x
    starts = np.unique(np.sort(first)[::_GROUP])  # first band of each group
    ends = [*starts[1:], int(last.max(initial=0)) + 1]
    found = []
    for lo, hi in zip(starts.tolist(), ends):
        members = np.flatnonzero((first < hi) & (last >= lo))
        found += _sweep(boxes, labels, tiles, members, np.maximum(first[members], lo), np.minimum(last[members], hi - 1),
                        height, stride)
    if not found:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    return tuple(np.concatenate(parts) for parts in zip(*found))


def _sweep(boxes: np.ndarray, labels: np.ndarray, tiles: np.ndarray, members: np.ndarray, first: np.ndarray,
           last: np.ndarray, height: float, stride: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The pairs among `members` whose intersection's top lies in one of bands first..last (per member)."""
    span = last - first + 1
    copy = np.repeat(members, span)  # box of each entry
    band = np.repeat(first, span) + np.arange(len(copy)) - np.repeat(np.cumsum(span) - span, span)
    order = np.lexsort((boxes[copy, 0], band))
    copy, band = copy[order], band[order]
    starts = band * stride + boxes[copy, 0]
    ends = np.searchsorted(starts, band * stride + boxes[copy, 2], side="left")  # entries starting before each ends
    counts = np.maximum(ends - np.arange(len(copy)) - 1, 0)
    total = np.cumsum(counts)
    found = []
    lo = 0
    while lo < len(copy):  # runs of entries whose candidate lists together stay under _CHUNK
        hi = max(lo + 1, int(np.searchsorted(total, total[lo] - counts[lo] + _CHUNK, side="right")))
        c = counts[lo:hi]
        p = np.repeat(np.arange(lo, hi), c)
        q = p + 1 + np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        i, j = copy[p], copy[q]
        bi, bj = boxes[i], boxes[j]
        w = np.minimum(bi[:, 2], bj[:, 2]) - np.maximum(bi[:, 0], bj[:, 0])
        h = np.minimum(bi[:, 3], bj[:, 3]) - np.maximum(bi[:, 1], bj[:, 1])
        top = np.floor(np.maximum(bi[:, 1], bj[:, 1]) / height).astype(np.int64)
        keep = (w > 0) & (h > 0) & (labels[i] == labels[j]) & (tiles[i] != tiles[j]) & (top == band[p])
        found.append((i[keep], j[keep], (w * h)[keep]))
        lo = hi
    return found


def _greedy(scores: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Keep mask of greedy NMS where (i, j) are the pairs that suppress one another."""
    order = np.lexsort((np.arange(len(scores)), -scores))  # by score, ties by index: deterministic
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    hi = np.where(rank[i] < rank[j], i, j)
    lo = np.where(rank[i] < rank[j], j, i)
    by = np.argsort(hi, kind="stable")
    hi, lo = hi[by], lo[by]
    bounds = np.searchsorted(hi, np.arange(len(scores) + 1))
    alive = np.ones(len(scores), bool)
    for k in order:
        if alive[k]:
            alive[lo[bounds[k]:bounds[k + 1]]] = False
    return alive


def merge(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, tiles: np.ndarray,
          truncated: np.ndarray, metric: str = "ios", threshold: float = 0.5) -> np.ndarray:
    """Indices of the detections to keep (ascending). Boxes are xyxy in scene pixels."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if len(boxes) == 0:
        return np.zeros(0, int)
    i, j, inter = overlapping_pairs(boxes, labels, tiles)
    area = _area(boxes)
    # rule 1: truncated boxes covered by a more complete view from another tile
    cover_i = truncated[i] & (~truncated[j] | (area[j] > area[i])) & (inter >= threshold * area[i])
    cover_j = truncated[j] & (~truncated[i] | (area[i] > area[j])) & (inter >= threshold * area[j])
    alive = np.ones(len(boxes), bool)
    alive[i[cover_i]] = False
    alive[j[cover_j]] = False
    # rule 2: NMS among the survivors
    live = alive[i] & alive[j]
    i, j, inter = i[live], j[live], inter[live]
    if metric == "iou":
        denom = area[i] + area[j] - inter
    else:
        denom = np.minimum(area[i], area[j])
    match = inter > threshold * np.maximum(denom, 1e-12)
    alive &= _greedy(scores, i[match], j[match])
    return np.flatnonzero(alive)
