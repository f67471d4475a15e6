"""Ground sample distance of a raster, in metres, whatever its CRS.

Measured on the ground rather than read from the CRS units, so that geographic CRSs
(degrees), Web Mercator's scale distortion and rotated transforms all come out right.
"""

from __future__ import annotations

import math

from affine import Affine

_EARTH_RADIUS_M = 6_371_008.8  # mean radius; haversine is within 0.5% of the ellipsoid


def _haversine(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


def pixel_size_m(crs, transform: Affine, width: int, height: int) -> tuple[float, float] | None:
    """Ground size (x, y) in metres of one pixel at the scene centre; None without a CRS."""
    if crs is None:
        return None
    from rasterio.warp import transform as warp_transform

    cx, cy = width / 2, height / 2
    n = 16  # measure over several pixels so rounding in the reprojection does not matter
    cols, rows = [cx, cx + n, cx], [cy, cy, cy + n]
    xs, ys = zip(*(transform @ (c, r) for c, r in zip(cols, rows)))
    lons, lats = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    dx = _haversine(lons[0], lats[0], lons[1], lats[1]) / n
    dy = _haversine(lons[0], lats[0], lons[2], lats[2]) / n
    return dx, dy


def gsd_m(crs, transform: Affine, width: int, height: int) -> float | None:
    """One GSD for the raster: the geometric mean of the pixel's two ground sides."""
    size = pixel_size_m(crs, transform, width, height)
    return None if size is None else math.sqrt(size[0] * size[1])
