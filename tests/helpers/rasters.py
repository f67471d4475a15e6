"""Small GeoTIFFs with the properties of each real test raster, written with rasterio in
milliseconds.

A fresh clone has no ../shared/realdata (see helpers.realdata), so every property a test checks on a
real file is also checked on one of these: MADE maps each real file's name to a writer of its
equivalent (same band layout, dtype, nodata, CRS kind and transform kind, smaller). The scene-like
ones carry the stand-in's bright squares (scalemae_det.synthetic.standin) so the detector finds
something in them.

    RGB.byte.tif                RGB uint8, UTM 18N, 30 m, nodata 0 in a collar, not a multiple of a
    tile
    RGBA.uint16.tif             blue, green, red, alpha uint16 (alpha 0 over a third), UTM 12N, 1.38
    m
    all-nodata.tif              4 bands uint16, nodata 0 everywhere, tall and thin
    corrupt.tif                 a tiled GeoTIFF cut in half: it opens, reading its pixels fails
    float_nan.tif               one float32 band, nodata NaN (some pixels NaN), no CRS
    rgb1_fake_nir_epsg3857.tif  one band, EPSG:3857 at 200 m near 26 N (Web Mercator stretches it)
    rotated.tif                 one band, a rotated affine transform, no CRS
    shade.tif                   one band, EPSG:3857, ~9.6 m, nodata 255
    world.rgb.tif               RGB, EPSG:4326, 0.7 degree pixels across the equator
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from scalemae_det.synthetic.standin import SIZE


def write(path: Path, data: np.ndarray, **profile) -> Path:
    count, height, width = data.shape
    profile = (
        dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name)
        | profile
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if "colorinterp" in profile:
            ds.colorinterp = profile["colorinterp"]
    return path


def _squares(
    height: int, width: int, pitch: int = 2 * SIZE, value: int = 230, background: int = 20
) -> np.ndarray:
    """(height, width) uint8: the stand-in's bright squares of side SIZE on a regular grid."""
    grey = np.full((height, width), background, np.uint8)
    for r in range(4, height - SIZE, pitch):
        for c in range(4, width - SIZE, pitch):
            grey[r : r + SIZE, c : c + SIZE] = value
    return grey


def rgb_byte(path: Path) -> Path:
    grey = _squares(263, 301)
    data = np.stack([grey, grey, grey])
    rows, cols = np.mgrid[:263, :301]
    data[:, rows + cols < 80] = 0  # a black collar in one corner, as nodata
    return write(
        path, data, crs="EPSG:32618", transform=from_origin(101_985, 2_826_915, 30, 30), nodata=0
    )


def rgba_uint16(path: Path) -> Path:
    rng = np.random.default_rng(3)
    rgb = rng.integers(500, 20_000, (3, 320, 420)).astype(np.uint16)
    alpha = np.full((1, 320, 420), 65535, np.uint16)
    alpha[0, :, :140] = 0  # the left third is outside the image footprint
    data = np.concatenate([rgb[::-1], alpha])  # stored blue, green, red, alpha
    return write(
        path,
        data,
        crs="EPSG:32612",
        transform=from_origin(733_269, 4_078_301, 1.38, 1.38),
        colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.alpha],
    )


def all_nodata(path: Path) -> Path:
    return write(
        path,
        np.zeros((4, 900, 40), np.uint16),
        crs="EPSG:32628",
        transform=from_origin(341_970, 1_603_902, 3, 3),
        nodata=0,
    )


def truncated(path: Path) -> Path:
    rng = np.random.default_rng(4)
    write(
        path,
        rng.integers(0, 256, (3, 256, 256), dtype=np.uint8),
        crs="EPSG:3857",
        tiled=True,
        blockxsize=64,
        blockysize=64,
        transform=from_origin(14_321_853, 4_533_021, 0.6, 0.6),
    )
    os.truncate(path, path.stat().st_size // 2)  # the header survives, the later tiles are gone
    return path


def float_nan(path: Path) -> Path:
    data = np.arange(24, dtype=np.float32).reshape(1, 4, 6) / 24
    data[0, 1:3, 2:5] = np.nan
    return write(path, data, nodata=float("nan"), transform=Affine(100, 0, 0, 0, 100, 0))


def web_mercator(path: Path) -> Path:
    return write(
        path,
        _squares(100, 120)[None],
        crs="EPSG:3857",
        nodata=0,
        transform=from_origin(-8_789_636, 2_941_413, 200, 200),
    )


def rotated(path: Path) -> Path:
    data = (np.arange(150, dtype=np.uint8) + 50).reshape(1, 15, 10)
    return write(
        path,
        data,
        transform=Affine.translation(100, 200) @ Affine.rotation(30) @ Affine.scale(20, -10),
    )


def shade(path: Path) -> Path:
    data = _squares(200, 200)[None]
    data[:, :, :30] = 255
    return write(
        path,
        data,
        crs="EPSG:3857",
        nodata=255,
        transform=from_origin(-11_858_134, 4_813_698, 9.55, 9.55),
    )


def world_rgb(path: Path) -> Path:
    grey = _squares(64, 128)
    return write(
        path,
        np.stack([grey, grey, grey]),
        crs="EPSG:4326",
        transform=from_origin(-45, 22.5, 0.703125, 0.703125),
    )


MADE = {
    "RGB.byte.tif": rgb_byte,
    "RGBA.uint16.tif": rgba_uint16,
    "all-nodata.tif": all_nodata,
    "corrupt.tif": truncated,
    "float_nan.tif": float_nan,
    "rgb1_fake_nir_epsg3857.tif": web_mercator,
    "rotated.tif": rotated,
    "shade.tif": shade,
    "world.rgb.tif": world_rgb,
}
