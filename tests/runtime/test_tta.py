"""Test-time views (runtime/tta.py): the views are the square's symmetries and are undone exactly,
the fusion is weighted box fusion as its authors implement it, and a scene run with views finds
what the stand-in's numpy rule says each view sees."""

import numpy as np
import pytest

from helpers.wbf import reference_wbf
from scalemae_det.runtime import Detector
from scalemae_det.runtime.detections import Detections
from scalemae_det.runtime.tta import VIEWS, fuse, unview, view
from scalemae_det.synthetic.standin import SIZE, build_model, metadata, scene_with_squares


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    return Detector(build_model(tmp_path_factory.mktemp("model") / "standin.onnx"), "cpu")


def _mask_box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


@pytest.mark.parametrize("name", ["flip2", "flip4", "d8"])
def test_each_view_is_a_distinct_symmetry_of_the_tile_and_unview_undoes_it(name):
    rng = np.random.default_rng(1)
    tile = 40
    image = rng.random((1, 3, tile, tile)).astype(np.float32)  # no symmetry of its own
    seen = [view(image, w) for w in VIEWS[name]]
    assert len({s.tobytes() for s in seen}) == len(VIEWS[name])
    for s in seen:  # a symmetry: the same pixel values, rearranged
        np.testing.assert_array_equal(np.sort(s, axis=None), np.sort(image, axis=None))
    for _ in range(20):
        x0, y0 = rng.integers(0, tile - 2, 2)
        x1, y1 = x0 + rng.integers(1, tile - x0), y0 + rng.integers(1, tile - y0)
        mask = np.zeros((1, 1, tile, tile), bool)
        mask[..., y0:y1, x0:x1] = True
        for w in VIEWS[name]:
            found = _mask_box(view(mask, w)[0, 0])  # where the view shows the box
            np.testing.assert_array_equal(unview(found[None], w, tile)[0], [x0, y0, x1, y1])


def _views_of_objects(rng, n_views, n_objects, tile, jitter):
    """Each view: most objects found again with jittered corners and scores, some missed, some
    found twice, a few strays; scores all distinct (the reference breaks ties its own way)."""
    centres = rng.uniform(0.1 * tile, 0.9 * tile, (n_objects, 2))
    sides = rng.uniform(0.05 * tile, 0.25 * tile, (n_objects, 2))
    classes = rng.integers(1, 3, n_objects)
    views = []
    for _ in range(n_views):
        found = rng.random(n_objects) < 0.8
        twice = rng.random(n_objects) < 0.1
        index = np.concatenate([np.flatnonzero(found), np.flatnonzero(twice)])
        c = centres[index] + rng.normal(0, jitter, (len(index), 2))
        s = sides[index] * rng.uniform(0.85, 1.15, (len(index), 2))
        boxes = np.concatenate([c - s / 2, c + s / 2], 1)
        labels = classes[index]
        strays = rng.uniform(0, tile - 10, (3, 2))
        boxes = np.concatenate([boxes, np.concatenate([strays, strays + 8], 1)])
        labels = np.concatenate([labels, rng.integers(1, 3, 3)])
        boxes = np.clip(boxes, 0, tile).astype(np.float32)
        views.append(Detections(boxes, np.zeros(len(boxes), np.float32), labels.astype(np.int64)))
    scores = rng.permutation(np.linspace(0.05, 0.99, sum(len(v) for v in views)))
    start = 0
    for v in views:
        v.scores[:] = scores[start : start + len(v)]
        start += len(v)
    return views


@pytest.mark.parametrize(("n_views", "iou"), [(2, 0.55), (4, 0.55), (4, 0.4), (8, 0.7)])
def test_fusion_matches_the_reference_implementation(n_views, iou):
    wbf = reference_wbf()
    rng = np.random.default_rng(n_views * 10 + int(iou * 10))
    tile = 384.0
    views = _views_of_objects(rng, n_views, 40, tile, jitter=3.0)
    ours = fuse(views, iou)
    boxes, scores, labels = wbf(
        [v.boxes / tile for v in views],
        [v.scores for v in views],
        [v.labels for v in views],
        iou_thr=iou,
        skip_box_thr=0.0,
        conf_type="avg",
    )
    assert len(ours) == len(scores) < sum(len(v) for v in views)  # some fused, as the data says

    def order(b, c):  # by class, then corners: fused scores may coincide, fused boxes do not
        key = np.round(b, 4)
        return np.lexsort((key[:, 3], key[:, 2], key[:, 1], key[:, 0], c))

    a, b = order(ours.boxes / tile, ours.labels), order(boxes, labels)
    np.testing.assert_allclose(ours.boxes[a] / tile, boxes[b], atol=1e-5)
    np.testing.assert_allclose(ours.scores[a], scores[b], rtol=1e-5)
    np.testing.assert_array_equal(ours.labels[a], labels[b].astype(int))


def test_a_box_one_view_of_four_found_keeps_a_quarter_of_its_score():
    box = np.array([[10, 10, 30, 30]], np.float32)
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int))
    alone = fuse([Detections(box, np.array([0.8], np.float32), np.array([1])), *[empty] * 3])
    np.testing.assert_allclose(alone.scores, [0.2])
    np.testing.assert_array_equal(alone.boxes, box)
    # two classes on one box never fuse
    both = fuse(
        [
            Detections(box, np.array([0.8], np.float32), np.array([1])),
            Detections(box, np.array([0.6], np.float32), np.array([2])),
        ]
    )
    np.testing.assert_allclose(np.sort(both.scores), [0.3, 0.4])


def test_scene_with_views_finds_each_square_once_where_it_is(tmp_path, detector):
    """Uniform squares look the same in every view: every view set must give exactly the boxes
    and scores of a run without views (a wrong inverse would move or split them)."""
    corners = [(5, 5), (50, 9), (90, 40), (31, 70), (100, 100), (60, 55), (118, 15)]
    scene = scene_with_squares(tmp_path / "s.tif", 150, 130, corners, blue={1, 4})
    plain = detector.detect_scene(scene, overlap=0.25)
    assert len(plain.detections) == len(corners)
    for name in ("flip2", "flip4", "d8"):
        viewed = detector.detect_scene(scene, overlap=0.25, tta=name)
        a, b = (
            np.lexsort((r.detections.boxes[:, 1], r.detections.boxes[:, 0]))
            for r in (plain, viewed)
        )
        np.testing.assert_allclose(viewed.detections.boxes[b], plain.detections.boxes[a], atol=1e-4)
        np.testing.assert_allclose(
            viewed.detections.scores[b], plain.detections.scores[a], rtol=1e-5
        )
        np.testing.assert_array_equal(viewed.detections.labels[b], plain.detections.labels[a])


@pytest.mark.parametrize("name", ["flip2", "flip4", "d8"])
def test_a_fused_score_is_the_mean_of_the_corners_the_views_see(detector, name):
    """The stand-in scores a square by the grey value of the corner it takes for the upper-left:
    each view shows it a different corner of a square whose corners differ, so the fused score
    is the mean over views of the corner each view puts upper-left (found here by viewing the
    tile, not by knowing which corner is which)."""
    t = metadata().tile
    tiles = np.full((1, 3, t, t), 0.1, np.float32)
    r, c = 20, 14
    tiles[0, :, r : r + SIZE, c : c + SIZE] = 0.7
    for (dr, dc), grey in zip(
        [(0, 0), (0, SIZE - 1), (SIZE - 1, 0), (SIZE - 1, SIZE - 1)], [0.95, 0.85, 0.75, 0.6]
    ):
        tiles[0, :, r + dr, c + dc] = grey
    expected = []
    for w in VIEWS[name]:
        grey = view(tiles, w)[0].mean(0)
        rows, cols = np.nonzero(grey > 0.5)
        expected.append(grey[rows.min(), cols.min()])  # the square's upper-left in this view
    (found,) = detector.detect_tiles(tiles, tta=name)
    assert len(found) == 1
    np.testing.assert_allclose(found.scores, [np.mean(expected)], rtol=1e-5)
    np.testing.assert_allclose(found.boxes[0], [c, r, c + SIZE, r + SIZE], atol=1e-4)
    assert len(set(expected)) > 1  # the views did see different corners
