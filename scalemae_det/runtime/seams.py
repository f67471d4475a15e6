"""Tile seams: detections from overlapping tiles joined so that an object cut by a seam is reported
once.

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

from scalemae_det.base import checks

METRICS = ("iou", "ios")
_CHUNK = 1 << 16  # candidate pairs examined at a time, bounding memory on huge scenes
_GROUP = 1 << 15  # boxes (by their top band) swept at a time


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def overlapping_pairs(
    boxes: np.ndarray, labels: np.ndarray, tiles: np.ndarray
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
    group_starts = np.unique(np.sort(first)[::_GROUP])  # first band of each group
    group_ends = [*group_starts[1:], int(last.max(initial=0)) + 1]
    found = []
    for lo, hi in zip(group_starts.tolist(), group_ends):
        members = np.flatnonzero((first < hi) & (last >= lo))
        found += _sweep(
            boxes,
            labels,
            tiles,
            members,
            np.maximum(first[members], lo),
            np.minimum(last[members], hi - 1),
            height,
            stride,
        )
    if not found:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    return tuple(np.concatenate(parts) for parts in zip(*found))


def _sweep(
    boxes: np.ndarray,
    labels: np.ndarray,
    tiles: np.ndarray,
    members: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    height: float,
    stride: float,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The pairs among `members` whose intersection's top lies in one of bands first..last (per
    member)."""
    span = last - first + 1
    entry_box = np.repeat(members, span)  # the box behind each (box, band) entry
    band = (
        np.repeat(first, span) + np.arange(len(entry_box)) - np.repeat(np.cumsum(span) - span, span)
    )
    order = np.lexsort((boxes[entry_box, 0], band))
    entry_box, band = entry_box[order], band[order]
    starts = band * stride + boxes[entry_box, 0]
    ends = np.searchsorted(
        starts, band * stride + boxes[entry_box, 2], side="left"
    )  # entries starting before each ends
    candidates = np.maximum(
        ends - np.arange(len(entry_box)) - 1, 0
    )  # later entries of the band it may overlap
    running = np.cumsum(candidates)
    found = []
    start = 0
    while start < len(
        entry_box
    ):  # runs of entries whose candidate lists together stay under _CHUNK
        stop = max(
            start + 1,
            int(
                np.searchsorted(running, running[start] - candidates[start] + _CHUNK, side="right")
            ),
        )
        per_entry = candidates[start:stop]
        first_entry = np.repeat(np.arange(start, stop), per_entry)
        second_entry = (
            first_entry
            + 1
            + np.arange(per_entry.sum())
            - np.repeat(np.cumsum(per_entry) - per_entry, per_entry)
        )
        i, j = entry_box[first_entry], entry_box[second_entry]
        bi, bj = boxes[i], boxes[j]
        w = np.minimum(bi[:, 2], bj[:, 2]) - np.maximum(bi[:, 0], bj[:, 0])
        h = np.minimum(bi[:, 3], bj[:, 3]) - np.maximum(bi[:, 1], bj[:, 1])
        top = np.floor(np.maximum(bi[:, 1], bj[:, 1]) / height).astype(np.int64)
        keep = (
            (w > 0)
            & (h > 0)
            & (labels[i] == labels[j])
            & (tiles[i] != tiles[j])
            & (top == band[first_entry])
        )
        found.append((i[keep], j[keep], (w * h)[keep]))
        start = stop
    return found


def _greedy(scores: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Keep mask of greedy NMS where (i, j) are the pairs that suppress one another."""
    order = np.lexsort((np.arange(len(scores)), -scores))  # by score, ties by index: deterministic
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    winner = np.where(rank[i] < rank[j], i, j)  # the higher-scored of each pair
    loser = np.where(rank[i] < rank[j], j, i)
    by = np.argsort(winner, kind="stable")
    winner, loser = winner[by], loser[by]
    bounds = np.searchsorted(winner, np.arange(len(scores) + 1))
    alive = np.ones(len(scores), bool)
    for k in order:
        if alive[k]:
            alive[loser[bounds[k] : bounds[k + 1]]] = False
    return alive


def join_seams(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    tiles: np.ndarray,
    truncated: np.ndarray,
    metric: str = "ios",
    threshold: float = 0.5,
) -> np.ndarray:
    """Indices of the detections to keep (ascending). Boxes are xyxy in scene pixels."""
    checks.choice("match", metric, METRICS)
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
