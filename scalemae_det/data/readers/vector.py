"""Vector labels in any CRS: GeoJSON, GeoPackage, Shapefile, FlatGeobuf, read through pyogrio.

One file may cover many scenes: each feature goes to every scene it falls on, in that scene's
pixels, and the features on no scene are counted and reported.

1. The class is the attribute `class_field` names (an unknown name is an error listing the fields
   there are); without one, every feature is of one class named after the layer (a warning lists
   the fields). A feature without a value for it is skipped and counted.
2. A polygon or multipolygon becomes the bounding box, in the scene's pixels, of its outline (its
   exterior rings): the vertices are reprojected from the file's CRS to the scene's (rasterio's
   warp) and through the inverse of the scene's affine transform, a rotated one included. Edges
   are not densified: between vertices the box follows the straight line in the scene's CRS.
3. A point (or multipoint) becomes a square of `point_size` metres centred on it (its bounding
   box for a multipoint), sized by the scene's ground pixel size (as predict measures GSD); points
   without `point_size` are an error. Lines have no box and are skipped and counted.
4. A feature falls on a scene when its box overlaps the scene's pixels with a positive area.
5. A file without a CRS cannot be placed on georeferenced scenes, and vector labels cannot be
   placed on scenes without a georeference: both are errors. When no feature falls on any scene,
   the error gives how many there are and the two extents.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from scalemae_det.base.errors import InputError, ParameterError
from scalemae_det.base.geo import pixel_size_m
from scalemae_det.data.readers import ImageHeader, ImageIndex, LabelSet

POLYGON, POINT, LINE, EMPTY = "polygon", "point", "line", "empty"
ON_NO_SCENE = "feature(s) falling on no image"


def read_vector(
    labels: Path, index: ImageIndex, class_field: str | None, point_size: float | None
) -> LabelSet:
    """Boxes per scene of a vector file (the module doc's rules); every scene given gets an entry
    (one without features is a negative)."""
    from rasterio.crs import CRS

    from scalemae_det.runtime.vector import pyogrio

    raw = pyogrio()
    try:
        info = raw.read_info(labels)
        fields = [str(f) for f in info["fields"]]
        if class_field is not None and class_field not in fields:
            raise ParameterError(
                "class_field",
                f"no such field (the fields are: {', '.join(fields) or 'none'})",
                value=class_field,
                source=str(labels),
            )
        meta, _, wkb, values = raw.raw.read(
            labels, force_2d=True, columns=[class_field] if class_field else []
        )
    except raw.errors.DataSourceError as exc:
        raise InputError(f"{labels}: not a readable vector file: {exc}".splitlines()[0]) from None
    out = LabelSet()
    layer = str(info.get("layer_name") or labels.stem)
    if class_field is None:
        classes = [layer] * len(wkb)
        out.notes.append(
            f"{labels}: no class field given: every feature is of class {layer!r} "
            f"(the fields are: {', '.join(fields) or 'none'})"
        )
    else:
        classes = [None if _missing(v) else str(v) for v in values[0]]
    kinds, parts = zip(*(outline(g) for g in wkb)) if len(wkb) else ((), ())
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    _check_georeference(labels, crs, index.headers)
    keep = [k for k, (kind, c) in enumerate(zip(kinds, classes)) if kind in (POLYGON, POINT)]
    out.skipped["line feature(s) (no box outline)"] += sum(k == LINE for k in kinds)
    out.skipped["feature(s) without a geometry"] += sum(k == EMPTY for k in kinds)
    without = [k for k in keep if classes[k] is None]
    out.skipped[f"feature(s) without a {class_field!r} value"] += len(without)
    keep = [k for k in keep if classes[k] is not None]
    if point_size is None and any(kinds[k] == POINT for k in keep):
        n = sum(kinds[k] == POINT for k in keep)
        raise ParameterError(
            "point_size",
            f"{n} point feature(s) need `point_size` (metres) to become boxes",
            source=str(labels),
        )
    landed = np.zeros(len(wkb), bool)
    for header in index.headers:
        boxes, hit = scene_boxes(
            header, crs, [kinds[k] for k in keep], [parts[k] for k in keep], point_size
        )
        landed[np.asarray(keep, int)[hit]] = True
        out.add(header, boxes, [classes[keep[k]] for k in hit])
    n_off = int((~landed[keep]).sum()) if keep else 0
    if keep and n_off == len(keep):
        raise _on_no_scene(labels, crs, [parts[k] for k in keep], index.headers)
    out.skipped[ON_NO_SCENE] += n_off
    return out


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == ""


def _check_georeference(labels: Path, crs, headers: list[ImageHeader]) -> None:
    """Rule 5's first half."""
    bare = [h for h in headers if h.crs is None]
    if bare:
        raise InputError(
            f"{labels}: vector labels need georeferenced images; {bare[0].path} has no "
            "georeference (give pixel labels: Pascal VOC, YOLO, CSV or COCO)"
        )
    if crs is None:
        raise InputError(
            f"{labels}: has no CRS, so its coordinates cannot be placed on the georeferenced "
            "images (give the file its CRS, e.g. a .prj beside a Shapefile)"
        )


def scene_boxes(
    header: ImageHeader, crs, kinds: list[str], parts: list[np.ndarray], point_size: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Features' boxes (M, 4) in the scene's pixels (rules 2-4) for those that fall on it, and
    the (M,) indices of those features."""
    from rasterio.warp import transform as warp_transform

    if not parts:
        return np.zeros((0, 4)), np.zeros(0, int)
    sizes = np.array([len(p) for p in parts])
    xy = np.concatenate(parts)
    xs, ys = xy[:, 0], xy[:, 1]
    if crs != header.crs:
        xs, ys = (np.asarray(v) for v in warp_transform(crs, header.crs, xs, ys))
    cols, rows = ~header.transform @ (xs, ys)
    cols, rows = np.asarray(cols, float), np.asarray(rows, float)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    box = np.stack(
        [
            np.minimum.reduceat(cols, starts),
            np.minimum.reduceat(rows, starts),
            np.maximum.reduceat(cols, starts),
            np.maximum.reduceat(rows, starts),
        ],
        axis=1,
    )
    points = np.array([k == POINT for k in kinds])
    if points.any():
        dx, dy = pixel_size_m(header.crs, header.transform, header.width, header.height)
        half = np.array([-point_size / dx, -point_size / dy, point_size / dx, point_size / dy]) / 2
        box[points] += half
    finite = np.isfinite(box).all(axis=1)
    hit = (
        finite
        & (np.minimum(box[:, 2], header.width) > np.maximum(box[:, 0], 0))
        & (np.minimum(box[:, 3], header.height) > np.maximum(box[:, 1], 0))
    )
    return box[hit], np.flatnonzero(hit)


def _on_no_scene(labels: Path, crs, parts: list[np.ndarray], headers: list[ImageHeader]):
    """Rule 5's last error: how many features, and their extent and the images', in the file's
    CRS."""
    from rasterio.warp import transform_bounds

    xy = np.concatenate(parts)
    mine = (*xy.min(axis=0), *xy.max(axis=0))
    boxes = []
    for h in headers:
        corners = np.array(
            [h.transform @ c for c in ((0, 0), (h.width, 0), (0, h.height), (h.width, h.height))]
        )
        left, bottom = corners.min(axis=0)
        right, top = corners.max(axis=0)
        boxes.append(transform_bounds(h.crs, crs, left, bottom, right, top))
    b = np.array(boxes)
    theirs = (*b[:, :2].min(axis=0), *b[:, 2:].max(axis=0))
    return InputError(
        f"{labels}: none of its {len(parts)} features falls on an image: the features span "
        f"{_extent(mine)}, the images {_extent(theirs)} (both in {crs.to_string()})"
    )


def _extent(b) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


# --- WKB (OGC Simple Features, ISO 19125-1 section 8.2) -----------------------------------------

_TYPES = {1: POINT, 2: LINE, 3: POLYGON, 4: POINT, 5: LINE, 6: POLYGON}


def outline(wkb: bytes | None) -> tuple[str, np.ndarray]:
    """A geometry's kind (polygon, point, line or empty) and the (K, 2) vertices that bound its
    box: the exterior rings of its polygons, else its points, else its lines' vertices."""
    if wkb is None:
        return EMPTY, np.zeros((0, 2))
    found: dict[str, list[np.ndarray]] = {POLYGON: [], POINT: [], LINE: []}
    _walk(memoryview(wkb), 0, found)
    for kind in (POLYGON, POINT, LINE):
        if found[kind]:
            xy = np.concatenate(found[kind])
            xy = xy[np.isfinite(xy).all(axis=1)]  # an empty point is NaN, NaN
            if len(xy):
                return kind, xy
    return EMPTY, np.zeros((0, 2))


def _walk(buf: memoryview, pos: int, found: dict) -> int:
    """Parse one WKB geometry at `pos` into `found`; returns the position after it."""
    order = "<" if buf[pos] == 1 else ">"
    (code,) = struct.unpack_from(order + "I", buf, pos + 1)
    pos += 5
    dims = 2
    if code & 0x20000000:  # EWKB SRID
        pos += 4
    if code & 0xE0000000:  # EWKB Z / M flags
        dims += bool(code & 0x80000000) + bool(code & 0x40000000)
        code &= 0x0FFFFFFF
    else:  # ISO: 1000 Z, 2000 M, 3000 ZM
        dims += {0: 0, 1: 1, 2: 1, 3: 2}[code // 1000]
        code %= 1000

    def coords(n: int) -> np.ndarray:
        nonlocal pos
        a = np.frombuffer(buf, order + "f8", n * dims, pos).reshape(n, dims)[:, :2]
        pos += 8 * n * dims
        return a

    def count() -> int:
        nonlocal pos
        (n,) = struct.unpack_from(order + "I", buf, pos)
        pos += 4
        return n

    if code == 1:
        found[POINT].append(coords(1))
    elif code == 2:
        found[LINE].append(coords(count()))
    elif code == 3:
        for ring in range(count()):
            xy = coords(count())
            if ring == 0:
                found[POLYGON].append(xy)
    elif code in (4, 5, 6, 7):
        for _ in range(count()):
            pos = _walk(buf, pos, found)
    else:
        raise InputError(f"unsupported geometry type {code} (WKB)")
    return pos
