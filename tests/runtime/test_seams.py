"""Tile layout and seam merging, on synthetic boxes (no model)."""

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms

from scalemae_det.runtime import seams as seams_mod
from scalemae_det.runtime.seams import join_seams, overlapping_pairs
from scalemae_det.runtime.tiling import offsets, plan


@pytest.mark.parametrize(
    "length,size,stride", [(1000, 256, 205), (256, 256, 205), (100, 256, 205), (257, 256, 1)]
)
def test_offsets_cover_every_pixel_with_full_tiles(length, size, stride):
    starts = offsets(length, size, stride)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + size] = True
        assert s >= 0 and (s + size <= length or length < size)
    assert covered.all()
    assert starts[-1] == max(0, length - size)  # the last tile is flush with the edge
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


def test_plan_inner_edges_and_resampled_mapping():
    tiles = plan(300, 130, src=128, tile=64, overlap=0.25)
    assert {(t.col, t.row) for t in tiles} == {(c, r) for c in (0, 96, 172) for r in (0, 2)}
    assert [t.index for t in tiles] == list(range(6))
    first, last = tiles[0], tiles[-1]
    assert first.inner == (False, False, True, True) and last.inner == (True, True, False, False)
    assert (first.out_width, first.out_height) == (64, 64)
    # a model pixel is two scene pixels; offsets are the window's
    np.testing.assert_array_equal(
        last.to_scene(np.array([[1, 2, 3, 4]], np.float32)), [[174, 6, 178, 10]]
    )
    small = plan(40, 30, src=128, tile=64, overlap=0.25)
    assert len(small) == 1 and (small[0].out_width, small[0].out_height) == (20, 15)
    assert small[0].inner == (False,) * 4
    boxes = np.array([[0, 5, 10, 15], [30, 30, 64, 40], [20, 20, 30, 30]], np.float32)
    np.testing.assert_array_equal(
        tiles[4].truncated(boxes, 2.0), [True, True, False]
    )  # inner left and top edges
    np.testing.assert_array_equal(
        tiles[0].truncated(boxes, 2.0), [False, True, False]
    )  # right edge x2 = 64


def _reference_cross_tile_nms(boxes, scores, labels, tiles, thr, metric):
    """Plain greedy NMS, pair by pair, suppressing only across tiles."""
    order = sorted(range(len(boxes)), key=lambda k: (-scores[k], k))
    keep, dead = [], set()
    for a in order:
        if a in dead:
            continue
        keep.append(a)
        for b in order:
            if b in dead or b == a or labels[a] != labels[b] or tiles[a] == tiles[b]:
                continue
            x1, y1 = np.maximum(boxes[a, :2], boxes[b, :2])
            x2, y2 = np.minimum(boxes[a, 2:], boxes[b, 2:])
            inter = max(0, x2 - x1) * max(0, y2 - y1)
            area = lambda k: (boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1])  # noqa: E731
            denom = area(a) + area(b) - inter if metric == "iou" else min(area(a), area(b))
            if b not in keep and inter > thr * denom:
                dead.add(b)
    return sorted(keep)


def _random(n, seed, tiles=4):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 40, (n, 2))
    return (
        np.concatenate([xy, xy + wh], 1),
        rng.uniform(0.1, 1, n).astype(np.float32),
        rng.integers(1, 4, n),
        rng.integers(0, tiles, n),
    )


def test_iou_merge_equals_torchvision_batched_nms_when_every_box_has_its_own_tile():
    boxes, scores, labels, _ = _random(400, 0)
    keep = join_seams(boxes, scores, labels, np.arange(400), np.zeros(400, bool), "iou", 0.5)
    ref = batched_nms(
        torch.tensor(boxes), torch.tensor(scores, dtype=torch.float64), torch.tensor(labels), 0.5
    )
    np.testing.assert_array_equal(keep, np.sort(ref.numpy()))
    assert 0 < len(keep) < 400


@pytest.mark.parametrize("metric", ["iou", "ios"])
def test_merge_matches_pairwise_reference_and_leaves_within_tile_alone(metric, monkeypatch):
    boxes, scores, labels, tiles = _random(150, 1)
    keep = join_seams(boxes, scores, labels, tiles, np.zeros(150, bool), metric, 0.4)
    np.testing.assert_array_equal(
        keep, _reference_cross_tile_nms(boxes, scores, labels, tiles, 0.4, metric)
    )
    monkeypatch.setattr(seams_mod, "_CHUNK", 7)  # candidate pairs in many small chunks: same answer
    np.testing.assert_array_equal(
        join_seams(boxes, scores, labels, tiles, np.zeros(150, bool), metric, 0.4), keep
    )
    same_tile = join_seams(
        boxes, scores, labels, np.zeros(150, int), np.zeros(150, bool), metric, 0.4
    )
    assert len(same_tile) == 150


@pytest.mark.parametrize("group", [1 << 15, 5])  # one sweep, or bands swept a few boxes at a time
def test_overlapping_pairs_are_exactly_the_brute_force_ones(group, monkeypatch):
    monkeypatch.setattr(seams_mod, "_GROUP", group)
    boxes, _, labels, tiles = _random(120, 2)
    i, j, inter = overlapping_pairs(boxes, labels, tiles)
    assert (
        len(i) == len({tuple(sorted(p)) for p in zip(i.tolist(), j.tolist())}) > 0
    )  # each pair once
    found = {tuple(sorted(p)): a for p, a in zip(zip(i.tolist(), j.tolist()), inter)}
    expected = {}
    for a in range(120):
        for b in range(a + 1, 120):
            w = min(boxes[a, 2], boxes[b, 2]) - max(boxes[a, 0], boxes[b, 0])
            h = min(boxes[a, 3], boxes[b, 3]) - max(boxes[a, 1], boxes[b, 1])
            if w > 0 and h > 0 and labels[a] == labels[b] and tiles[a] != tiles[b]:
                expected[(a, b)] = w * h
    assert found.keys() == expected.keys()
    np.testing.assert_allclose([found[k] for k in expected], list(expected.values()))


def test_truncated_part_yields_to_the_whole_object_seen_by_the_neighbour():
    whole = [100, 10, 130, 40]  # seen whole by tile 1
    part = [100, 10, 112, 40]  # tile 0 ends at x = 112: it sees the left part, scored higher
    other = [300, 10, 312, 40]  # truncated too, but nobody sees it whole: kept
    boxes = np.array([part, whole, other], float)
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    labels = np.array([1, 1, 1])
    tiles = np.array([0, 1, 0])
    truncated = np.array([True, False, True])
    assert join_seams(boxes, scores, labels, tiles, truncated, "iou", 0.5).tolist() == [1, 2]
    # without the truncation flag, IoU NMS keeps both pieces (IoU 0.4) and IoS keeps the
    # higher-scored part
    assert join_seams(boxes, scores, labels, tiles, np.zeros(3, bool), "iou", 0.5).tolist() == [
        0,
        1,
        2,
    ]
    assert join_seams(boxes, scores, labels, tiles, np.zeros(3, bool), "ios", 0.5).tolist() == [
        0,
        2,
    ]
    # a different class is a different object
    assert join_seams(
        boxes, scores, np.array([2, 1, 1]), tiles, truncated, "iou", 0.5
    ).tolist() == [
        0,
        1,
        2,
    ]
    # when every view touches an inner edge, the larger view wins whatever the scores
    assert join_seams(boxes, scores, labels, tiles, np.ones(3, bool), "iou", 0.5).tolist() == [1, 2]
