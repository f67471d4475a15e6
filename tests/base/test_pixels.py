"""scalemae_det.base.pixels: band choice, stretch, nodata and scaling, on real and generated
rasters."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from helpers.realdata import ORIGINS, raster
from scalemae_det.base.errors import UserError
from scalemae_det.base.pixels import (
    FILL,
    masked_inside,
    nodata_mask,
    read_unit,
    select_bands,
    to_unit,
    value_range,
)


def _write(path, data, **kw):
    count, height, width = data.shape
    profile = (
        dict(
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype=data.dtype.name,
            crs="EPSG:32631",
            transform=from_origin(500_000, 4_000_000, 1, 1),
        )
        | kw
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


@pytest.mark.parametrize("origin", ORIGINS)
def test_band_selection_follows_colour_interpretation_and_count(tmp_path, origin):
    with rasterio.open(
        raster("RGBA.uint16.tif", origin, tmp_path)
    ) as ds:  # stored blue, green, red, alpha
        interp = [c.name for c in ds.colorinterp]
        assert select_bands(ds) == [interp.index(c) + 1 for c in ("red", "green", "blue")]
        assert select_bands(ds, [4, 3, 2]) == [4, 3, 2]
        assert select_bands(ds, [2]) == [2, 2, 2]
        with pytest.raises(UserError, match="band 5 requested"):
            select_bands(ds, [5, 1, 2])
        with pytest.raises(UserError, match="1 or 3"):
            select_bands(ds, [1, 2])
    with rasterio.open(raster("shade.tif", origin, tmp_path)) as ds:
        assert select_bands(ds) == [1, 1, 1]
    plain = _write(tmp_path / "five.tif", np.zeros((5, 4, 4), np.uint8))
    with rasterio.open(plain) as ds:
        assert select_bands(ds) == [1, 2, 3]
    two = _write(tmp_path / "two.tif", np.zeros((2, 4, 4), np.uint8))
    with rasterio.open(two) as ds, pytest.raises(UserError, match="two.tif: 2 colour bands"):
        select_bands(ds)


def test_stretch_is_per_band_percentiles_of_valid_pixels(tmp_path):
    rng = np.random.default_rng(1)
    data = np.stack(
        [
            rng.integers(0, 4000, (300, 200)),
            rng.integers(1000, 60000, (300, 200)),
            rng.integers(5, 9, (300, 200)),
        ]
    ).astype(np.uint16)
    data[:, :50] = 0  # nodata collar
    path = _write(tmp_path / "u16.tif", data, nodata=0)
    valid = (data != 0).any(0)
    with rasterio.open(path) as ds:
        lo, hi = value_range(ds, [1, 2, 3])
        assert value_range(ds, [1, 2, 3], (0, 1000))[1].tolist() == [1000] * 3
    expected = np.array([np.percentile(band[valid], (2, 98)) for band in data])
    np.testing.assert_allclose(np.stack([lo, hi], 1), expected)


def test_stretch_of_a_large_raster_comes_from_a_decimated_read(tmp_path):
    ramp = np.tile(np.arange(3000, dtype=np.uint16), (3, 40, 1))
    path = _write(tmp_path / "ramp.tif", ramp)
    with rasterio.open(path) as ds:
        lo, hi = value_range(ds, [1, 2, 3])
    # a ramp's 2nd and 98th percentiles, up to the decimation step (3000 / 1024 px)
    np.testing.assert_allclose(lo, 0.02 * 2999, atol=4)
    np.testing.assert_allclose(hi, 0.98 * 2999, atol=4)


def test_uint8_is_divided_by_255_and_ranges_clip():
    data = np.array([[[0, 51, 255]]] * 3, np.uint8)
    np.testing.assert_array_equal(to_unit(data, None), data / np.float32(255))
    vr = (np.array([10.0, 0, 0]), np.array([20.0, 100, 100]))
    out = to_unit(np.array([[[5, 15, 30]], [[0, 50, 100]], [[0, 0, 0]]], np.uint16), vr)
    np.testing.assert_allclose(out[0, 0], [0, 0.5, 1])
    np.testing.assert_allclose(out[1, 0], [0, 0.5, 1])
    assert out.dtype == np.float32


@pytest.mark.parametrize("origin", ORIGINS)
def test_alpha_band_is_the_nodata_mask_and_uint16_scales(tmp_path, origin):
    with rasterio.open(raster("RGBA.uint16.tif", origin, tmp_path)) as ds:
        bands = select_bands(ds)
        alpha = ds.read(4)
        window = Window(100, 100, 300, 200)
        unit, mask = read_unit(ds, bands, window, value_range(ds, bands, (0, 20000)))
        raw = ds.read(bands, window=window)
    np.testing.assert_array_equal(mask, alpha[100:300, 100:400] == 0)
    assert 0 < mask.mean() < 1
    np.testing.assert_allclose(unit[:, ~mask], raw[:, ~mask] / 20000, rtol=1e-6)
    assert (unit[:, mask] == FILL).all()


@pytest.mark.parametrize("origin", ORIGINS)
def test_nodata_value_nan_and_resampled_mask(tmp_path, origin):
    with rasterio.open(raster("RGB.byte.tif", origin, tmp_path)) as ds:
        data = ds.read()
        mask = nodata_mask(ds, [1, 2, 3])
    np.testing.assert_array_equal(mask, (data == 0).all(0))  # nodata 0 in every band
    assert mask.any()
    with rasterio.open(raster("float_nan.tif", origin, tmp_path)) as ds:
        unit, mask = read_unit(
            ds, select_bands(ds), Window(0, 0, ds.width, ds.height), value_range(ds, [1, 1, 1])
        )
        raw = ds.read(1)
    np.testing.assert_array_equal(mask, np.isnan(raw))
    assert np.isfinite(unit).all() and (unit[:, mask] == FILL).all()
    # NaN without a declared nodata value is nodata too
    arr = np.ones((1, 8, 8), np.float32)
    arr[0, 2:4, 2:4] = np.nan
    path = _write(tmp_path / "nan.tif", arr)
    with rasterio.open(path) as ds:
        _, mask = read_unit(ds, [1, 1, 1], Window(0, 0, 8, 8), (np.zeros(3), np.ones(3)))
        _, half = read_unit(
            ds, [1, 1, 1], Window(0, 0, 8, 8), (np.zeros(3), np.ones(3)), out_shape=(4, 4)
        )
    np.testing.assert_array_equal(mask, np.isnan(arr[0]))
    assert half[1, 1] and not half[3, 3]  # bilinear reads spread NaN by at most a pixel


@pytest.mark.parametrize("origin", ORIGINS)
def test_corrupt_raster_is_a_one_line_user_error(tmp_path, origin):
    with rasterio.open(raster("corrupt.tif", origin, tmp_path)) as ds:
        with pytest.raises(UserError, match=r"corrupt.tif: reading failed at window") as err:
            read_unit(ds, [1, 2, 3], Window(0, 0, ds.width, ds.height), None)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("side", [600, 3000])  # read whole, and decimated (STATS_SIDE 1024)
def test_nodata_value_inside_the_image_is_counted_and_a_collar_is_not(tmp_path, side):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 255, (3, side, side), dtype=np.uint8)  # 255 never drawn
    rows, cols = np.indices((side, side))
    collar = cols < rows // 3  # a slanted collar along the left edge, as a rotated scene has
    data[:, collar] = 255
    data[:, : side // 10] = 255  # and one along the top
    # saturated pixels well inside the data (one beside the collar or the far edge has no valid
    # pixel on that side, and counts as collar)
    inner = (cols >= rows // 3 + 2) & (rows >= side // 10 + 2) & (rows < side - 2)
    bright = (rng.random((side, side)) < 0.01) & inner & (cols < side - 2)
    data[:, bright] = 255  # saturated pixels inside the data: what nodata 255 hides
    data[0, 5 * side // 10, 5 * side // 10 :] = 255  # 255 in one band only: not nodata
    path = _write(tmp_path / "bright.tif", data, nodata=255)
    with rasterio.open(path) as ds:
        found = masked_inside(ds, [1, 2, 3])
    assert abs(found - bright.sum()) <= 0.1 * bright.sum()  # exact when read whole
    if side <= 1024:
        assert found == bright.sum()
    data[:, bright] = 0
    with rasterio.open(_write(tmp_path / "collar.tif", data, nodata=255)) as ds:
        assert masked_inside(ds, [1, 2, 3]) == 0
    with rasterio.open(_write(tmp_path / "none.tif", data)) as ds:  # no nodata declared
        assert masked_inside(ds, [1, 2, 3]) == 0
