"""Detections as a GIS layer: GeoPackage (`--format gpkg`, and `merge --to x.gpkg`) or FlatGeobuf
(`x.fgb`).

Written through pyogrio, GeoPandas' default I/O engine: its wheels bundle GDAL (no system GDAL, as
rasterio's), and `pyogrio.raw.write` takes WKB geometries and one numpy array per field, so a layer
is written straight from the runtime's arrays, without GeoPandas or shapely; with `append=True` the
job-wide merge adds one scene at a time to one layer. It is an extra of its own (`gis`), not part
of `runtime`, because an edge box writing GeoJSON needs no second GDAL.

Box outlines are built as WKB here (a little-endian Polygon of one closed 5-point ring, 93 bytes,
OGC Simple Features / ISO 19125-1 section 8.2) in one numpy pass. FlatGeobuf is written without its
packed R-tree (layer option SPATIAL_INDEX=NO): GDAL can append only to such a file; GIS tools read
it all the same, a spatial query just scans it. A GeoPackage also carries the QGIS style of its
layer (runtime/qgis_style.py), so it opens in QGIS coloured by class.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from scalemae_det.base.atomic import atomic_path
from scalemae_det.base.errors import InputError, ParameterError

DRIVERS = {".gpkg": "GPKG", ".fgb": "FlatGeobuf"}
LAYER = "detections"
_LAYER_OPTIONS = {"FlatGeobuf": {"SPATIAL_INDEX": "NO"}, "GPKG": {}}
_WKB = np.dtype(
    [("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("points", "<u4"), ("xy", "<f8", (5, 2))]
)
# The fields of every layer written here, per scene or merged, in the order `columns` gives them
FIELDS = ("scene", "label", "class_id", "score", "px_x1", "px_y1", "px_x2", "px_y2")


def pyogrio():
    """The pyogrio module, or a one-line error saying how to install it."""
    try:
        import pyogrio as module
    except ImportError:
        raise InputError(
            "GeoPackage and FlatGeobuf need pyogrio: pip install 'scalemae-det[gis]'"
        ) from None
    return module


def driver_for(path: str | os.PathLike, param: str | None = None) -> str:
    """The GDAL driver for a layer file, by its suffix; `param` names the parameter in the error."""
    suffix = Path(path).suffix.lower()
    if suffix not in DRIVERS:
        problem = "expected a .gpkg (GeoPackage) or .fgb (FlatGeobuf) file"
        if param:
            raise ParameterError(param, problem, value=str(path))
        raise InputError(f"{path}: {problem}")
    return DRIVERS[suffix]


def polygon_wkb(rings: np.ndarray) -> np.ndarray:
    """(N, 5, 2) closed rings -> (N,) object array of WKB Polygon bytes."""
    records = np.zeros(len(rings), _WKB)
    records["order"], records["type"], records["rings"], records["points"] = 1, 3, 1, 5
    records["xy"] = rings
    raw = records.tobytes()
    size = _WKB.itemsize
    out = np.empty(len(rings), object)
    out[:] = [raw[k : k + size] for k in range(0, len(raw), size)]
    return out


def pixel_box_rings(boxes: np.ndarray, transform, src_crs, dst_crs) -> np.ndarray:
    """(N, 4) xyxy pixel boxes -> (N, 5, 2) closed counter-clockwise outlines in `dst_crs`.

    Corners are pixel edges: corner (col, row) maps to `transform * (col, row)` in `src_crs` (no
    half-pixel shift), then is reprojected (rasterio's warp, one call for all corners) when
    `dst_crs` differs; None for either keeps the map plane.
    """
    from rasterio.warp import transform as warp_transform

    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    cols = np.stack([b[:, 0], b[:, 0], b[:, 2], b[:, 2], b[:, 0]], 1)
    rows = np.stack([b[:, 1], b[:, 3], b[:, 3], b[:, 1], b[:, 1]], 1)
    xs, ys = transform @ (cols, rows)
    if src_crs is not None and dst_crs is not None and len(b):
        xs, ys = (
            np.reshape(v, cols.shape)
            for v in warp_transform(src_crs, dst_crs, xs.ravel(), ys.ravel())
        )
    rings = np.stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)], -1).reshape(-1, 5, 2)
    signed = np.sum(rings[:, :-1, 0] * rings[:, 1:, 1] - rings[:, 1:, 0] * rings[:, :-1, 1], axis=1)
    rings[signed < 0] = rings[
        signed < 0, ::-1
    ]  # exterior rings counter-clockwise (RFC 7946, GeoPackage)
    return rings


def columns(
    scene: str, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> list[np.ndarray]:
    """The FIELDS of N detections of one scene, in order; `boxes` xyxy scene pixels."""
    n = len(scores)
    names = np.asarray(class_names + ["?"], object)  # a label past the names stays visible as "?"
    label_ix = np.where((labels >= 1) & (labels <= len(class_names)), labels - 1, len(class_names))
    return [
        np.full(n, scene, object),
        names[label_ix.astype(np.int64)],
        labels.astype(np.int32),
        scores.astype(np.float64),
        *(boxes[:, k].astype(np.float64) for k in range(4)),
    ]


def write_layer(
    path: str | os.PathLike,
    rings: np.ndarray,
    fields: list[np.ndarray],
    crs: str | None,
    driver: str,
    append: bool = False,
) -> None:
    """Write (or append) N box outlines and their FIELDS to the `detections` layer of `path`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # GDAL's notes, e.g. about a CRS-less layer
        pyogrio().raw.write(
            str(path),
            polygon_wkb(rings),
            fields,
            list(FIELDS),
            layer=LAYER,
            driver=driver,
            geometry_type="Polygon",
            crs=crs,
            append=append,
            layer_options=_LAYER_OPTIONS[driver],
            promote_to_multi=False,
        )


def read_columns(path: str | os.PathLike, names: list[str]) -> list[np.ndarray]:
    """Fields of the `detections` layer of a file written here (no geometry read)."""
    meta, _, _, values = pyogrio().raw.read(
        str(path), layer=LAYER, columns=names, read_geometry=False
    )
    found = dict(zip(meta["fields"], values))
    return [found[name] for name in names]


def write_scene_layer(result, path: str | os.PathLike, crs_mode: str = "wgs84") -> Path:
    """One scene's detections as a GeoPackage or FlatGeobuf (by suffix); complete or absent."""
    from rasterio.crs import CRS

    from scalemae_det.runtime.outputs import box_rings, target_crs

    driver = driver_for(path)
    scene = result.scene
    crs = (
        CRS.from_user_input(target_crs(crs_mode, scene.crs)).to_string()
        if scene.georeferenced
        else None
    )
    det = result.detections
    fields = columns(result.name, det.boxes, det.scores, det.labels, result.class_names)
    with atomic_path(path, keep_suffix=True) as tmp:
        write_layer(tmp, box_rings(result, crs_mode), fields, crs, driver)
        if driver == "GPKG":
            from scalemae_det.runtime.qgis_style import write_style

            write_style(tmp, result.class_names)
    return Path(path)
