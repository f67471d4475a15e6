"""Detections of a scene as files: GeoJSON (RFC 7946), COCO results JSON, CSV; each written atomically.

Box corners are pixel edges: corner (col, row) maps to `transform * (col, row)`, so the upper-left
corner of pixel (0, 0) is the transform's origin (no half-pixel shift). GeoJSON is WGS84 lon/lat
unless `crs="native"`, which keeps the scene's CRS and names it in a `crs` member. A scene without
georeference keeps pixel coordinates (col, row) in every mode, flagged by `"pixel_coordinates": true`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.warp import transform as warp_transform

from scalemae_det.runtime.detector import SceneResult
from scalemae_det.base.atomic import atomic_path

FORMATS = {"geojson": ".geojson", "coco": ".json", "csv": ".csv", "gpkg": ".gpkg"}  # gpkg: runtime/vector.py
CRS_MODES = ("wgs84", "native")
WGS84 = "EPSG:4326"


def _to_output_crs(result: SceneResult, cols: np.ndarray, rows: np.ndarray, crs_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Scene pixel coordinates -> output coordinates (map coordinates of the chosen CRS, or pixels)."""
    scene = result.scene
    if not scene.georeferenced:
        return cols, rows
    xs, ys = scene.transform @ (cols, rows)
    if crs_mode == "wgs84" and len(xs):
        xs, ys = (np.asarray(v) for v in warp_transform(scene.crs, WGS84, xs.ravel(), ys.ravel()))
    return np.reshape(xs, cols.shape), np.reshape(ys, rows.shape)


def box_rings(result: SceneResult, crs_mode: str = "wgs84") -> np.ndarray:
    """(N, 5, 2) closed, counter-clockwise box outlines in output coordinates."""
    from scalemae_det.runtime.vector import pixel_box_rings  # one outline rule for every format

    scene = result.scene
    if not scene.georeferenced:
        return pixel_box_rings(result.detections.boxes, Affine.identity(), None, None)
    return pixel_box_rings(result.detections.boxes, scene.transform, scene.crs, WGS84 if crs_mode == "wgs84" else None)


def _crs_member(crs) -> dict:
    epsg = crs.to_epsg()
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def geojson(result: SceneResult, crs_mode: str = "wgs84") -> dict:
    det = result.detections
    name = Path(result.path).name
    features = [
        {"type": "Feature",
         "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]},
         "properties": {"label": result.class_names[label - 1], "class_id": int(label), "score": float(score),
                        "scene": name, "pixel_bbox": box.tolist()}}
        for ring, box, score, label in zip(box_rings(result, crs_mode), det.boxes, det.scores, det.labels.tolist())]
    doc: dict = {"type": "FeatureCollection", "features": features}
    if not result.scene.georeferenced:
        doc["pixel_coordinates"] = True
    elif crs_mode == "native":
        doc["crs"] = _crs_member(result.scene.crs)
    return doc


def image_id(path: str) -> int | str:
    """COCO image id of a scene: its stem as a number when it is one (xView's "5.tif" -> 5), else its file name."""
    stem = Path(path).stem
    return int(stem) if stem.isdigit() else Path(path).name


def coco(result: SceneResult) -> list[dict]:
    det = result.detections
    ident = image_id(result.path)
    return [{"image_id": ident, "category_id": int(label), "score": float(score),
             "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
            for (x1, y1, x2, y2), score, label in zip(det.boxes.tolist(), det.scores, det.labels.tolist())]


def csv_rows(result: SceneResult, crs_mode: str = "wgs84") -> list[list]:
    det = result.detections
    b = det.boxes
    xs, ys = _to_output_crs(result, (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, crs_mode)
    name = Path(result.path).name
    header = ["scene", "label", "class_id", "score", "x1", "y1", "x2", "y2", "center_x", "center_y"]
    return [header] + [[name, result.class_names[label - 1], label, float(score), *box, float(x), float(y)]
                       for box, score, label, x, y in zip(b.tolist(), det.scores, det.labels.tolist(), xs, ys)]


def output_path(out_dir: str | os.PathLike, scene: str | os.PathLike, fmt: str) -> Path:
    return Path(out_dir) / (Path(scene).stem + FORMATS[fmt])


def write(result: SceneResult, path: str | os.PathLike, fmt: str = "geojson", crs_mode: str = "wgs84") -> Path:
    """Write one scene's detections; the file appears complete or not at all."""
    if fmt == "gpkg":
        from scalemae_det.runtime.vector import write_scene

        return write_scene(result, path, crs_mode)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            with open(tmp, "w", newline="") as fh:
                csv.writer(fh).writerows(csv_rows(result, crs_mode))
        else:
            doc = geojson(result, crs_mode) if fmt == "geojson" else coco(result)
            tmp.write_text(json.dumps(doc))
    return Path(path)
