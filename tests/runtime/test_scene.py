"""Detector.detect_scene on generated scenes with the ONNX stand-in: seams, batching, prefetch,
resampling, GSD limits, nodata. Every expected box is known from where the squares were drawn."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

import scalemae_det.runtime.detector as detector_mod
from scalemae_det.base.errors import UserError
from scalemae_det.base.pixels import FILL
from scalemae_det.runtime import Detector
from scalemae_det.runtime.scene import batches, open_scene
from scalemae_det.runtime.session import Session
from scalemae_det.runtime.tiling import plan
from scalemae_det.synthetic.standin import (
    SIZE,
    build_model,
    metadata,
    reference,
    scene_with_squares,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "standin.onnx")


@pytest.fixture(scope="module")
def detector(model) -> Detector:
    return Detector(model, "cpu")


def _layout(width, height, n, seed, size=SIZE, gap=3):
    """Non-touching square corners, drawn at random (rejection sampling)."""
    rng = np.random.default_rng(seed)
    corners = []
    for _ in range(100 * n):
        if len(corners) == n:
            break
        c, r = (int(v) for v in rng.integers(0, (width - size, height - size)))
        if all(abs(c - c2) >= size + gap or abs(r - r2) >= size + gap for c2, r2 in corners):
            corners.append((c, r))
    assert len(corners) == n, "scene too small for that many objects"
    return corners


def _sorted(boxes):
    return boxes[np.lexsort((boxes[:, 1], boxes[:, 0]))]


def _expected(corners, size=SIZE, scale=1.0):
    return _sorted(np.array([[c, r, c + size, r + size] for c, r in corners], float) * scale)


def _crossing_seams(corners, tiles, size=SIZE):
    """Objects that some tile cuts (part inside, part outside): the ones merging must get right."""

    def cut(c, r, t):
        inside_x = max(0, min(c + size, t.col + t.width) - max(c, t.col))
        inside_y = max(0, min(r + size, t.row + t.height) - max(r, t.row))
        return 0 < inside_x * inside_y < size * size

    return [k for k, (c, r) in enumerate(corners) if any(cut(c, r, t) for t in tiles)]


@pytest.mark.parametrize("match", ["ios", "iou"])
def test_objects_across_seams_are_found_once(tmp_path, detector, match, monkeypatch):
    corners = _layout(330, 250, 60, seed=3)
    path = scene_with_squares(tmp_path / "seams.tif", 330, 250, corners, blue=set(range(0, 60, 3)))
    result = detector.detect_scene(path, overlap=0.25, match=match)
    seam = _crossing_seams(corners, result.scene.tiles)
    assert len(seam) >= 20  # the layout really puts objects on seams
    np.testing.assert_array_equal(_sorted(result.detections.boxes), _expected(corners))
    labels = {
        (int(b[0]), int(b[1])): lab
        for b, lab in zip(result.detections.boxes, result.detections.labels)
    }
    assert [labels[c] for c in corners] == [2 if k % 3 == 0 else 1 for k in range(60)]
    # the same run without joining seams reports seam objects several times: the join removes them
    monkeypatch.setattr(detector_mod, "join_seams", lambda boxes, *a, **k: np.arange(len(boxes)))
    raw = detector.detect_scene(path, overlap=0.25, match=match)
    duplicates = len(raw.detections) - len(corners)
    assert duplicates >= len(seam)
    print(f"seam objects {len(seam)}: duplicates {duplicates} before joining seams, 0 after")


def test_batch_size_and_prefetch_do_not_change_results(tmp_path, model, detector):
    corners = _layout(300, 150, 40, seed=4)
    path = scene_with_squares(tmp_path / "s.tif", 300, 150, corners)
    fixed = build_model(tmp_path / "fixed.onnx", metadata(batch=4), fixed_batch=True)
    runs = {
        "batch 4 prefetch": detector.detect_scene(path),
        "batch 4 one thread": detector.detect_scene(path, prefetch=False),
        "batch 1": Detector(model, "cpu", batch=1).detect_scene(path),
        "fixed batch 4": Detector(fixed, "cpu").detect_scene(path),
    }
    assert len(runs["batch 1"].scene.tiles) % 4 != 0  # the last batch of the fixed graph is padded
    first = runs.pop("batch 4 prefetch")
    assert len(first.detections) == 40
    for name, other in runs.items():
        for field in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(
                getattr(other.detections, field), getattr(first.detections, field), err_msg=name
            )
        assert other.tiles_run == first.tiles_run


@pytest.mark.parametrize("scene_gsd,size", [(0.5, 2 * SIZE), (2.0, SIZE // 2)])
def test_resampled_reads_map_boxes_back_to_scene_pixels(tmp_path, detector, scene_gsd, size):
    width, height = 420, 330
    corners = [
        (c - c % 2, r - r % 2)
        for c, r in _layout(width, height, 20, seed=5, size=size, gap=size // 2)
    ]
    path = scene_with_squares(tmp_path / "g.tif", width, height, corners, size=size, res=scene_gsd)
    result = detector.detect_scene(path)
    factor = detector.metadata.gsd / scene_gsd  # scene pixels per model pixel
    assert result.scene.factor == pytest.approx(factor)
    assert result.scene.tiles == plan(width, height, round(64 * factor), 64, 0.2)
    found = _sorted(result.detections.boxes)
    assert len(found) == len(corners)
    np.testing.assert_allclose(
        found, _expected(corners, size), atol=factor
    )  # within one model pixel


def test_gsd_limits_and_as_is_warnings(tmp_path, detector):
    def scene(gsd):
        return scene_with_squares(tmp_path / f"{gsd}.tif", 100, 80, [(10, 10)], res=gsd)

    with pytest.raises(
        UserError, match=r"0.2.tif: GSD 0.2 m .* downsampling 5x .*use gsd_mode as-is"
    ):
        detector.detect_scene(scene(0.2))
    with pytest.raises(UserError, match=r"upsampling 5x"):
        detector.detect_scene(scene(5.0))
    assert "5x finer" in detector.detect_scene(scene(0.2), gsd_mode="as-is").notes[0]
    assert detector.detect_scene(scene(1.2), gsd_mode="as-is").notes == []
    assert "1.3x coarser" in detector.detect_scene(scene(1.3), gsd_mode="as-is").notes[0]
    bare = scene_with_squares(tmp_path / "bare.tif", 100, 80, [(10, 10)], crs=None)
    result = detector.detect_scene(bare)
    assert result.scene.gsd is None and "pixel coordinates" in result.notes[0]
    np.testing.assert_array_equal(result.detections.boxes, [[10, 10, 22, 22]])


def test_all_nodata_tiles_never_reach_the_model(tmp_path, model, monkeypatch):
    width, height = 300, 220
    corners = [(200, 40), (250, 150)]
    path = scene_with_squares(tmp_path / "collar.tif", width, height, corners, nodata=0)
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, :, :130] = 0  # a nodata collar over the left part
        ds.write(data)
    tiles = plan(width, height, 64, 64, 0.2)
    empty = sum(t.col + t.width <= 130 for t in tiles)
    assert empty > 0
    seen = []
    original = Session.run
    monkeypatch.setattr(
        Session, "run", lambda self, images: seen.append(len(images)) or original(self, images)
    )
    result = Detector(model, "cpu").detect_scene(path)
    assert result.tiles_skipped == empty and result.tiles_run == len(tiles) - empty == sum(seen)
    assert result.notes == []  # a collar is what nodata is for: no word about it
    np.testing.assert_array_equal(_sorted(result.detections.boxes), _expected(corners))


def test_a_nodata_value_that_also_occurs_as_data_is_said(tmp_path, detector):
    path = scene_with_squares(tmp_path / "white.tif", 120, 90, [(20, 20)], nodata=255)
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, 50:53, 60:70] = 255  # 30 saturated pixels, white in every band
        data[0, 70, 30:90] = 255  # white in one band only: not nodata
        ds.write(data)
    (note,) = detector.detect_scene(path).notes
    assert "nodata 255 also occurs inside the image: about 30 pixel(s) (0.28%)" in note


def test_nodata_is_filled_and_detections_centred_on_it_dropped(tmp_path, detector):
    corners = [(20, 20), (60, 20)]
    path = scene_with_squares(tmp_path / "masked.tif", 100, 64, corners)
    mask = np.full((64, 100), 255, np.uint8)
    mask[:, 25:40] = 0  # the first square keeps only its left 5 columns
    with rasterio.open(path, "r+") as ds:
        ds.write_mask(mask)
    result = detector.detect_scene(path)
    np.testing.assert_array_equal(result.detections.boxes, [[20, 20, 25, 32], [60, 20, 72, 32]])
    scene = open_scene(path, detector.metadata)
    batch = next(batches(scene, 4, 64))
    assert (batch.images[0][:, :, 25:40] == FILL).all()  # masked pixels, whatever they held
    assert batch.nodata[0][:, 25:40].all() and not batch.nodata[0][:, :25].any()
    # a box the model puts around nodata pixels is dropped, one centred on valid pixels kept
    batch.images[0][:, 20:32, 26:38] = 0.9

    def left_boxes():  # tile 0's detections, leaving out the second square at its right edge
        det = detector._scene_detections(batch, 0.3)[0][1]
        return _sorted(det.boxes[det.boxes[:, 0] < 50])

    np.testing.assert_array_equal(left_boxes(), [[20, 20, 25, 32]])
    batch.nodata[0][:] = False
    np.testing.assert_array_equal(left_boxes(), [[20, 20, 25, 32], [26, 20, 38, 32]])


def test_small_scene_is_padded_and_its_edges_are_not_seams(tmp_path, detector):
    path = scene_with_squares(tmp_path / "small.tif", 40, 30, [(2, 3), (30, 10)])
    result = detector.detect_scene(path)
    assert len(result.scene.tiles) == 1 and result.tiles_run == 1
    np.testing.assert_array_equal(
        _sorted(result.detections.boxes), [[2, 3, 14, 15], [30, 10, 40, 22]]
    )


def test_detect_tiles_returns_the_models_detections_per_tile(detector):
    rng = np.random.default_rng(7)
    images = np.full((6, 3, 64, 64), 0.1, np.float32)
    for img in images[1:]:
        for c, r in ((2, 2), (30, 40)):
            img[:, r : r + SIZE, c : c + SIZE] = rng.uniform(0.55, 1.0)
    for thr in (None, 0.8):
        found = detector.detect_tiles(images, score_threshold=thr)
        assert len(found) == 6 and len(found[0]) == 0
        for det, (boxes, scores, labels) in zip(found, reference(images, 16)):
            keep = scores >= (thr or detector.metadata.score_threshold)
            np.testing.assert_array_equal(det.boxes, boxes[keep])
            np.testing.assert_array_equal(det.labels, labels[keep])
    assert 0 < sum(map(len, found)) < 10  # the 0.8 threshold removed some of the 10 objects
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        detector.detect_tiles(images[:, :, :32])


def test_session_refuses_what_it_cannot_run(tmp_path, model):
    bare = build_model(tmp_path / "bare.onnx", with_metadata=False)
    with pytest.raises(UserError, match="bare.onnx: not a scalemae-det model"):
        Session(bare, "cpu")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(UserError, match="junk.onnx: not a loadable ONNX model"):
        Session(junk, "cpu")
    with pytest.raises(UserError, match="model file not found"):
        Session(tmp_path / "missing.onnx", "cpu")
    fixed = build_model(tmp_path / "fixed.onnx", metadata(batch=4), fixed_batch=True)
    with pytest.raises(UserError, match="fixed batch of 4"):
        Session(fixed, "cpu", batch=2)
    try:
        gpu = Session(model, "cuda")
    except UserError as exc:  # no usable GPU here: an error, never a silent CPU run
        assert "provider='cuda': requested but CUDAExecutionProvider not usable" in str(exc)
    else:
        assert gpu.provider == "CUDAExecutionProvider"
