"""The parity comparison itself: it must pass a reordering and catch every kind of disagreement."""

from __future__ import annotations

import json

import numpy as np

from helpers import commands
from scalemae_det.export.parity import compare, validation_tiles
from scalemae_det.runtime.detections import Detections, unpad

THRESHOLD, K = 0.3, 10


def dets(rows) -> Detections:
    """rows of (x1, y1, x2, y2, score, label)."""
    a = np.asarray(rows, np.float64).reshape(-1, 6)
    return Detections(
        a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int64)
    )


REF = [
    dets([(0, 0, 10, 10, 0.9, 1), (20, 20, 40, 40, 0.8, 2), (50, 5, 60, 30, 0.79999, 2)]),
    dets([]),
]


def check(exported, **kw):
    return compare(REF, exported, THRESHOLD, K, "float32", "test", **kw)


def test_identical_and_reordered_pass():
    assert check(REF).passed
    swapped = dets([(0, 0, 10, 10, 0.9, 1), (50, 5, 60, 30, 0.79999, 2), (20, 20, 40, 40, 0.8, 2)])
    report = check([swapped, dets([])])
    assert report.passed and report.compared_detections == 3 and report.max_box_diff_px == 0


def test_box_score_label_and_count_differences_fail():
    moved = dets([(0, 0, 10.02, 10, 0.9, 1), (20, 20, 40, 40, 0.8, 2), (50, 5, 60, 30, 0.79999, 2)])
    report = check([moved, dets([])])
    assert not report.passed and abs(report.max_box_diff_px - 0.02) < 1e-5
    rescored = dets(
        [(0, 0, 10, 10, 0.9003, 1), (20, 20, 40, 40, 0.8, 2), (50, 5, 60, 30, 0.79999, 2)]
    )
    assert not check([rescored, dets([])]).passed
    relabelled = dets(
        [(0, 0, 10, 10, 0.9, 3), (20, 20, 40, 40, 0.8, 2), (50, 5, 60, 30, 0.79999, 2)]
    )
    report = check([relabelled, dets([])])
    assert not report.passed and report.label_agreement == 2 / 3
    extra = dets([(1, 1, 5, 5, 0.5, 1)])
    report = check([REF[0], extra])
    assert not report.passed and report.count_agreement == 0.5
    assert not check(REF, padding_zero=False).passed


def test_detection_at_the_cut_off_may_differ():
    """A score within the tolerance of the threshold may fall on either side of it."""
    borderline = dets(
        [
            (0, 0, 10, 10, 0.9, 1),
            (20, 20, 40, 40, 0.8, 2),
            (50, 5, 60, 30, 0.79999, 2),
            (70, 70, 80, 80, THRESHOLD + 5e-5, 1),
        ]
    )
    assert check([borderline, dets([])]).passed
    assert not check([borderline, dets([(70, 70, 80, 80, THRESHOLD + 0.01, 1)])]).passed


def test_unpad_flags_nonzero_padding():
    boxes = np.zeros((2, 3, 4), np.float32)
    scores, labels = np.zeros((2, 3), np.float32), np.zeros((2, 3), np.int64)
    boxes[0, 0], scores[0, 0], labels[0, 0] = (1, 2, 3, 4), 0.5, 2
    got, ok = unpad(boxes, scores, labels, np.array([1, 0]))
    assert ok and [len(d.scores) for d in got] == [1, 0] and got[0].labels.tolist() == [2]
    scores[1, 2] = 0.1
    assert not unpad(boxes, scores, labels, np.array([1, 0]))[1]


def test_validation_tiles_mix_a_blank_tile_with_busy_ones():
    for batch, count in [(1, 2), (2, 2), (3, 3), (4, 4)]:
        t = validation_tiles(64, batch)
        assert t.shape == (count, 3, 64, 64) and t.dtype == np.float32
        assert not t[1].any() and all(t[i].std() > 0.1 for i in range(count) if i != 1)
        assert t.min() >= 0 and t.max() <= 1


def test_parity_fails_on_non_finite_outputs_and_the_opset_range_is_the_exporters():
    from torch.onnx import _constants

    from scalemae_det.export.options import MAX_OPSET
    from scalemae_det.export.parity import compare
    from scalemae_det.runtime.detections import Detections

    ref = [
        Detections(np.array([[0, 0, 9, 9]], np.float32), np.array([0.9], np.float32), np.array([1]))
    ]
    assert compare(ref, ref, 0.3, 10, "float32", "test").passed
    nan = [
        Detections(
            np.array([[0, 0, np.nan, 9]], np.float32), np.array([0.9], np.float32), np.array([1])
        )
    ]
    report = compare(ref, nan, 0.3, 10, "float32", "test")
    assert not report.passed and not report.finite and "NON-FINITE" in report.summary()
    assert MAX_OPSET == _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET


def test_parity_probes_below_a_threshold_that_leaves_nothing_to_compare(
    world, place, monkeypatch, capsys
):
    """At 0.9999 the tiny model keeps (almost) nothing; the check then compares at a lower
    threshold, and passes."""
    args = commands.values(world, place)
    code, _, err = commands.run(
        f"{commands.EXPORT} --score-threshold 0.9999", args, monkeypatch, capsys
    )
    assert code == 0, err
    report = json.loads((place["tmp"] / "m.onnx.parity.json").read_text())
    assert report["passed"] and report["compared_detections"] < 10
    probe = report["probe"]
    assert (
        probe["lowered"]
        and probe["score_threshold"] < 0.9999
        and probe["compared_detections"] >= 10
    )
    assert probe["passed"] and probe["finite"]
