"""Every real GeoTIFF in ../shared/realdata, and its generated equivalent, gives a sensible result
or one clean error."""

import math

import numpy as np
import pytest
import rasterio

from helpers.realdata import NAMES, ORIGINS, raster, realdata_dir
from scalemae_det.base.errors import UserError, dashed_flag
from scalemae_det.runtime import Detector
from scalemae_det.runtime.session import Session
from scalemae_det.synthetic.standin import build_model, metadata

# the failures we expect, by (file, gsd mode); the stand-in model has a 1 m GSD. The real
# corrupt.tif's full-resolution tiles are broken but its overviews are not: resampled 2x (its GSD is
# ~0.45 m), GDAL reads the overviews and the scene runs; the generated one (cut in half, no
# overviews) fails both ways
ERRORS = {("corrupt.tif", "as-is"): "reading failed at window"} | {
    (name, "resample"): "upsampling"
    for name in ("RGB.byte.tif", "rgb1_fake_nir_epsg3857.tif", "shade.tif", "world.rgb.tif")
}
MADE_ERRORS = ERRORS | {("corrupt.tif", "resample"): "reading failed at window"}


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    return Detector(build_model(tmp_path_factory.mktemp("model") / "standin.onnx"), "cpu")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return tmp_path_factory.mktemp("made")


def test_the_real_files_are_all_there():
    if not realdata_dir().is_dir():
        pytest.skip(f"{realdata_dir()} absent (fresh clone): the generated rasters stand in for it")
    assert sorted(p.name for p in realdata_dir().glob("*.tif")) == sorted(NAMES)


@pytest.mark.parametrize("mode", ["resample", "as-is"])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("origin", ORIGINS)
def test_each_file_runs_or_fails_in_one_line(detector, made, origin, name, mode):
    path = raster(name, origin, made)
    errors = ERRORS if origin == "real" else MADE_ERRORS
    try:
        result = detector.detect_scene(path, gsd_mode=mode)
    except UserError as exc:
        assert (name, mode) in errors, f"unexpected failure: {exc}"
        message = str(exc)
        assert (
            message.startswith(str(path)) and errors[name, mode] in message and "\n" not in message
        )
        if (
            "upsampling" in message
        ):  # the parameter as a Python caller names it, and as the CLI renders it
            assert "gsd_mode as-is" in message and "--gsd-mode as-is" in exc.render(dashed_flag)
        return
    assert (name, mode) not in errors
    scene = result.scene
    assert result.tiles_run + result.tiles_skipped == len(scene.tiles) > 0
    det = result.detections
    assert ((det.boxes[:, :2] >= 0) & (det.boxes[:, 2:] <= (scene.width, scene.height))).all()
    assert (det.boxes[:, 2:] > det.boxes[:, :2]).all()
    assert (det.scores >= detector.metadata.score_threshold).all() and set(det.labels.tolist()) <= {
        1,
        2,
    }
    assert (scene.gsd is None) == (scene.crs is None)


@pytest.mark.parametrize("origin", ORIGINS)
def test_all_nodata_runs_no_tile(detector, made, origin, monkeypatch):
    calls = []
    monkeypatch.setattr(Session, "run", lambda self, images: calls.append(images) or [])
    result = detector.detect_scene(raster("all-nodata.tif", origin, made))
    assert result.tiles_run == 0 and result.tiles_skipped == len(result.scene.tiles) > 10
    assert calls == [] and len(result.detections) == 0


@pytest.mark.parametrize("origin", ORIGINS)
def test_geographic_scene_gets_its_gsd_in_metres(tmp_path, made, origin):
    path = raster("world.rgb.tif", origin, made)
    with rasterio.open(path) as ds:
        deg = ds.transform.a
        lat = (ds.transform @ (ds.width / 2, ds.height / 2))[1]
    metre_per_degree = math.pi / 180 * 6_371_008.8
    expected = math.sqrt(
        deg * metre_per_degree * deg * metre_per_degree * math.cos(math.radians(lat))
    )
    # a model made for ~78 km pixels runs the scene at (almost) its own scale, without refusing it
    model = build_model(tmp_path / "coarse.onnx", metadata(gsd=round(expected, -3)))
    result = Detector(model, "cpu").detect_scene(path)
    assert result.scene.gsd == pytest.approx(expected, rel=1e-3)
    assert result.scene.factor == pytest.approx(round(expected, -3) / expected, rel=0.02)
    assert result.notes == [] and result.tiles_run > 0


@pytest.mark.parametrize("origin", ORIGINS)
def test_web_mercator_gsd_is_scaled_by_latitude(detector, made, origin):
    path = raster("rgb1_fake_nir_epsg3857.tif", origin, made)
    result = detector.detect_scene(path, gsd_mode="as-is")
    with rasterio.open(path) as ds:
        lon, lat = rasterio.warp.transform(
            ds.crs, "EPSG:4326", *[[v] for v in ds.transform @ (ds.width / 2, ds.height / 2)]
        )
        nominal = math.sqrt(abs(ds.transform.a * ds.transform.e))
    assert result.scene.gsd == pytest.approx(nominal * math.cos(math.radians(lat[0])), rel=2e-3)
    assert "coarser" in result.notes[0]


@pytest.mark.parametrize("origin", ORIGINS)
def test_rotated_ungeoreferenced_scene_uses_pixels_and_says_so(detector, made, origin):
    result = detector.detect_scene(raster("rotated.tif", origin, made))
    assert result.scene.gsd is None and result.scene.factor == 1
    assert "pixel coordinates" in result.notes[0]
    assert result.tiles_run == 1


@pytest.mark.parametrize("origin", ORIGINS)
def test_rgba_uint16_uses_rgb_bands_alpha_mask_and_a_stretch(detector, made, origin):
    path = raster("RGBA.uint16.tif", origin, made)
    result = detector.detect_scene(path, gsd_mode="as-is")
    scene = result.scene
    assert scene.bands == [3, 2, 1] and scene.value_range is not None
    assert (
        result.tiles_skipped > 0 and result.tiles_run > 0
    )  # tiles wholly under alpha = 0 are skipped
    scaled = detector.detect_scene(path, gsd_mode="as-is", scale=(0, 20000))
    np.testing.assert_array_equal(scaled.scene.value_range[1], [20000] * 3)
