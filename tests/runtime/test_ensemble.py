"""Ensembles (runtime/ensemble.py): several models over one scene are what each finds alone, fused
by weighted box fusion as its authors implement it (rules 2-4), and the ensembles that cannot be
built are refused by name (rule 1)."""

import numpy as np
import pytest
import rasterio

from helpers.wbf import reference_wbf
from scalemae_det.base.errors import ParameterError
from scalemae_det.runtime import Detector
from scalemae_det.runtime.ensemble import Ensemble
from scalemae_det.synthetic.standin import build_model, metadata, scene_with_squares

SIDE = 24  # squares' side in scene pixels: 12 model pixels for the member at twice the GSD


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three stand-ins that see one scene differently: at its GSD, at twice it (the scene
    resampled by half, as one checkpoint exported at another GSD would be), and at its GSD on
    bigger tiles with a high exported threshold (0.8), which dim squares stay under."""
    root = tmp_path_factory.mktemp("models")
    specs = {
        "native.onnx": metadata(),
        "coarse.onnx": metadata(gsd=2.0),
        "strict.onnx": metadata(tile=96, score_threshold=0.8),
    }
    return [Detector(build_model(root / name, meta), "cpu") for name, meta in specs.items()]


BIG = (0, 105, 40)  # a larger square: (col, row, side)


def _scene(path):
    """Squares of two brightnesses, the dim ones (grey 0.67) under the strict member's threshold,
    so only two members of three find them; and one BIG square, which the stand-in measures up to
    24 model pixels: 24 scene pixels at the scene's GSD, all 40 at twice it, so the members' boxes
    of it overlap at IoU 0.36, fused at a fusion IoU of 0.3 and not at 0.55."""
    corners = [(5, 5), (50, 9), (90, 40), (31, 70), (120, 100), (70, 110), (140, 20)]
    scene_with_squares(path, 180, 150, corners, size=SIDE, blue={1, 4})
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        for c, r in corners[4:]:
            data[:, r : r + SIDE, c : c + SIDE] = np.array([190, 170, 130])[:, None, None]
        c, r, side = BIG
        data[:, r : r + side, c : c + side] = np.array([250, 240, 230])[:, None, None]
        ds.write(data)
    return path


def _sorted(boxes, scores, labels):
    key = np.round(boxes, 3)
    order = np.lexsort((key[:, 1], key[:, 0], labels))
    return boxes[order], scores[order], labels[order]


def test_an_ensemble_is_the_reference_fusion_of_what_each_model_finds_alone(tmp_path, members):
    scene = _scene(tmp_path / "s.tif")
    alone = [m.detect_scene(scene, overlap=0.25) for m in members]
    # the members do differ: the coarse one's boxes are not the native one's, the strict one
    # misses the dim squares
    assert len(alone[0].detections) == len(alone[1].detections) == 8
    assert not np.allclose(alone[0].detections.boxes, alone[1].detections.boxes, atol=0.5)
    assert len(alone[2].detections) == 5
    with rasterio.open(scene) as ds:
        size = np.array([ds.width, ds.height] * 2, np.float64)

    found = {}
    for iou in (0.55, 0.3):
        calls = []
        fused = Ensemble(members, iou).detect_scene(
            scene, overlap=0.25, progress=lambda done, total, seen=calls: seen.append((done, total))
        )
        boxes, scores, labels = reference_wbf()(
            [r.detections.boxes / size for r in alone],
            [r.detections.scores for r in alone],
            [r.detections.labels for r in alone],
            iou_thr=iou,
            skip_box_thr=0.0,
            conf_type="avg",
        )
        keep = scores >= 0.3  # rule 4: none given, the lowest of the members' (0.3, 0.3, 0.8)
        want = _sorted(boxes[keep] * size, scores[keep], labels[keep].astype(int))
        got = _sorted(fused.detections.boxes, fused.detections.scores, fused.detections.labels)
        assert len(got[0]) == len(want[0])
        assert (len(want[0]) < len(scores)) == (iou == 0.55)  # at 0.55 the threshold cut one
        np.testing.assert_allclose(got[0], want[0], atol=1e-3)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
        np.testing.assert_array_equal(got[2], want[2])
        assert fused.tiles_run == sum(r.tiles_run for r in alone)
        assert calls[-1] == (fused.tiles_run, fused.tiles_run)  # progress over every member
        found[iou] = got
    # the dim squares, found by two members of three, keep two thirds of their mean score
    assert np.sum(found[0.3][1] < 0.5) == 3
    # the BIG square's boxes fuse at 0.3 only: one box there, its native box and a cut one at 0.55
    big = [b for b in found[0.3][0] if b[0] < 1 and b[1] > 100]
    assert len(big) == 1 and 24 < big[0][2] < 40
    assert not any(b[0] < 1 and b[1] > 100 and b[2] > 24.5 for b in found[0.55][0])


def test_a_given_threshold_cuts_the_fused_scores(tmp_path, members):
    scene = _scene(tmp_path / "s.tif")
    ensemble = Ensemble(members)
    everything = ensemble.detect_scene(scene, overlap=0.25)
    cut = ensemble.detect_scene(scene, overlap=0.25, score_threshold=0.85)
    expected = np.sort(everything.detections.scores[everything.detections.scores >= 0.85])
    np.testing.assert_allclose(np.sort(cut.detections.scores), expected)
    assert 0 < len(expected) < len(everything.detections)


def test_ensembles_that_cannot_be_built_are_refused(tmp_path, members):
    other = Detector(build_model(tmp_path / "other.onnx", metadata(class_names=["a", "b"])), "cpu")
    with pytest.raises(ParameterError, match=r"model='.*other.onnx': classes \['a', 'b'\], where"):
        Ensemble([members[0], other])
    again = Detector(str(tmp_path / ".." / tmp_path.name / "other.onnx"), "cpu")
    with pytest.raises(ParameterError, match="given twice"):
        Ensemble([other, again])
    with pytest.raises(ParameterError, match="ensemble_iou"):
        Ensemble(members[:2], 1.0)
    with pytest.raises(ValueError, match="at least two"):
        Ensemble(members[:1])
    # below the strict member's exported 0.8 its graph has dropped boxes: refused, not ignored
    with pytest.raises(ParameterError, match="strict.onnx"):
        Ensemble(members).threshold(0.5)
