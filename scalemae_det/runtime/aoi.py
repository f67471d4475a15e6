"""An area of interest: only the tiles meeting it are read and run, only detections inside kept.

    area = read_area("fields.gpkg")                 # any vector file GDAL reads, any CRS
    rings = area.in_pixels(scene.crs, scene.transform)   # its polygons in the scene's pixels
    meets = tiles_meeting(rings, scene.tiles)       # (T,) bool: which tiles to read
    keep = points_inside(rings, cx, cy)             # (N,) bool: detections whose centre is inside

The file is read with pyogrio (the `gis` extra), its polygons' WKB decoded here (OGC Simple
Features / ISO 19125-1 section 8.2: Polygon 3, MultiPolygon 6, GeometryCollection 7; read 2D) so
neither shapely nor GeoPandas is needed. Points and lines have no area and are left out; a file with
no polygon is refused. The polygons are taken into the scene's CRS with rasterio's warp, each edge
first split into DENSIFY parts so a straight edge in one CRS stays close to its curve in the other,
then into the scene's pixel grid by its inverse transform; everything after is plane geometry in
pixels, exact:
1. a tile meets the area when one of the area's edges meets the tile's rectangle (the separating
   axis test of a segment and an axis-aligned box: their bounding boxes overlap and the segment's
   line does not leave all four corners on one side), or when the tile lies wholly inside it (its
   centre is inside and no edge crosses it); touching counts as meeting;
2. a point is inside by the even-odd rule over the rings of each polygon (holes are out), and inside
   the area when inside any of its polygons.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scalemae_det.base.errors import ParameterError

DENSIFY = 8  # parts each edge is split into before reprojection
_CHUNK = 1 << 22  # pairs (tiles x edges, points x edges) computed at once: memory stays bounded

Polygon = list[np.ndarray]  # rings, (n, 2) closed: exterior first, then holes


def _wkb_polygons(data: bytes) -> tuple[list[Polygon], int]:
    """The polygons in one WKB geometry, and how many non-polygon parts it had."""
    polygons: list[Polygon] = []
    other = 0

    def geometry(offset: int) -> int:
        nonlocal other
        order = "<" if data[offset] == 1 else ">"
        (kind,) = struct.unpack_from(order + "I", data, offset + 1)
        kind = (kind & 0x0FFFFFFF) % 1000  # ISO Z/M codes (1003...) and EWKB flags read as 2D
        offset += 5
        if kind == 3:
            (count,) = struct.unpack_from(order + "I", data, offset)
            offset += 4
            rings = []
            for _ in range(count):
                (n,) = struct.unpack_from(order + "I", data, offset)
                offset += 4
                rings.append(np.frombuffer(data, order + "f8", 2 * n, offset).reshape(n, 2))
                offset += 16 * n
            if rings and len(rings[0]) >= 4:
                polygons.append(rings)
            return offset
        if kind in (4, 5, 6, 7):  # multi-geometries and collections: their parts
            (count,) = struct.unpack_from(order + "I", data, offset)
            offset += 4
            for _ in range(count):
                offset = geometry(offset)
            return offset
        other += 1
        return _skip(data, offset, kind, order)

    geometry(0)
    return polygons, other


def _skip(data: bytes, offset: int, kind: int, order: str) -> int:
    """The offset after a point (1) or line string (2) whose header has been read."""
    if kind == 1:
        return offset + 16
    if kind == 2:
        (n,) = struct.unpack_from(order + "I", data, offset)
        return offset + 4 + 16 * n
    raise ValueError(f"geometry type {kind} (curves, surfaces) is not supported")


@dataclass(frozen=True, eq=False)
class Area:
    """The polygons of an area-of-interest file, in its own CRS."""

    path: str
    crs: str  # as the file states it (an authority code or WKT)
    polygons: tuple[Polygon, ...]

    def in_pixels(self, crs, transform) -> list[Polygon]:
        """The polygons in the pixel grid of a scene with `crs` and affine `transform`."""
        from rasterio.crs import CRS
        from rasterio.warp import transform as warp

        same = CRS.from_user_input(self.crs) == crs
        inverse = ~transform
        out = []
        for polygon in self.polygons:
            rings = []
            for ring in polygon:
                if not same:
                    ring = _densify(ring)
                    xs, ys = warp(self.crs, crs, ring[:, 0], ring[:, 1])
                    ring = np.column_stack([xs, ys])
                cols, rows = inverse @ (ring[:, 0], ring[:, 1])
                rings.append(np.column_stack([cols, rows]))
            out.append(rings)
        return out


def _densify(ring: np.ndarray) -> np.ndarray:
    t = np.arange(DENSIFY) / DENSIFY
    a, b = ring[:-1], ring[1:]
    parts = a[:, None, :] + (b - a)[:, None, :] * t[None, :, None]
    return np.concatenate([parts.reshape(-1, 2), ring[-1:]])


def read_area(path: str | os.PathLike) -> Area:
    """The polygons of a vector file (first layer) and its CRS; ParameterError("aoi") when it
    cannot be read, has no CRS or no polygon."""
    from scalemae_det.runtime.vector import pyogrio

    module = pyogrio()
    shown = str(path)
    try:
        meta, _, geometries, _ = module.raw.read(shown, read_geometry=True, force_2d=True)
    except Exception as exc:  # pyogrio's DataSourceError / DataLayerError / OSError
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ParameterError("aoi", f"not a readable vector file ({first})", value=shown) from None
    if not meta.get("crs"):
        raise ParameterError(
            "aoi", "the file states no CRS; save it with one (EPSG:4326 for lon/lat)", value=shown
        )
    polygons: list[Polygon] = []
    for wkb in geometries if geometries is not None else []:
        if wkb is None:
            continue
        try:
            found, _ = _wkb_polygons(bytes(wkb))
        except (ValueError, struct.error) as exc:
            raise ParameterError("aoi", f"a geometry cannot be read: {exc}", value=shown) from None
        polygons += found
    if not polygons:
        raise ParameterError(
            "aoi", "no polygon in its first layer (points and lines have no area)", value=shown
        )
    return Area(shown, meta["crs"], tuple(polygons))


def _edges(polygon: Polygon) -> np.ndarray:
    """(E, 4) x1, y1, x2, y2 of every ring of a polygon."""
    return np.concatenate([np.column_stack([r[:-1], r[1:]]) for r in polygon])


def _inside_polygon(polygon: Polygon, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd rule over the polygon's rings (rule 2), chunked over the points."""
    edges = _edges(polygon)
    out = np.zeros(len(x), bool)
    step = max(1, _CHUNK // max(1, len(edges)))
    x1, y1, x2, y2 = (edges[:, k] for k in range(4))
    for start in range(0, len(x), step):
        px, py = x[start : start + step, None], y[start : start + step, None]
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        out[start : start + step] = (np.sum(crosses & (px < at), axis=1) % 2) == 1
    return out


def points_inside(polygons: Sequence[Polygon], x, y) -> np.ndarray:
    """(N,) bool: which points (pixel coordinates) are inside the area."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    inside = np.zeros(len(x), bool)
    for polygon in polygons:
        inside |= _inside_polygon(polygon, x, y)
    return inside


def _edges_meet_boxes(edges: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T,) bool: does any edge meet each box (left, top, right, bottom)? Rule 1's first half."""
    out = np.zeros(len(boxes), bool)
    step = max(1, _CHUNK // max(1, len(boxes)))
    left, top, right, bottom = (boxes[:, k, None] for k in range(4))
    corners = [(left, top), (right, top), (right, bottom), (left, bottom)]
    for start in range(0, len(edges), step):
        x1, y1, x2, y2 = (edges[start : start + step, k][None, :] for k in range(4))
        overlap = (
            (np.maximum(x1, x2) >= left)
            & (np.minimum(x1, x2) <= right)
            & (np.maximum(y1, y2) >= top)
            & (np.minimum(y1, y2) <= bottom)
        )
        sides = [(x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1) for cx, cy in corners]
        above = np.logical_and.reduce([s > 0 for s in sides])
        below = np.logical_and.reduce([s < 0 for s in sides])
        out |= np.any(overlap & ~above & ~below, axis=1)
    return out


def tiles_meeting(polygons: Sequence[Polygon], tiles) -> np.ndarray:
    """(T,) bool: which tiles (runtime.tiling.Tile, scene pixels) meet the area (rule 1)."""
    boxes = np.array(
        [(t.col, t.row, t.col + t.width, t.row + t.height) for t in tiles], np.float64
    ).reshape(-1, 4)
    meets = np.zeros(len(boxes), bool)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    for polygon in polygons:
        meets |= _edges_meet_boxes(_edges(polygon), boxes) | _inside_polygon(polygon, cx, cy)
    return meets
