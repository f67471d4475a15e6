"""Detections of a scene as files: GeoJSON (RFC 7946), COCO results JSON, CSV; each written
atomically.

Box corners are pixel edges: corner (col, row) maps to `transform * (col, row)`, so the upper-left
corner of pixel (0, 0) is the transform's origin (no half-pixel shift). Coordinates are in the CRS
that `output_crs` reads (the one vocabulary of every command's `crs`): WGS84 lon/lat by default
(RFC 7946's), the scene's own with "native", or any CRS rasterio reads ("EPSG:32633"); a GeoJSON
not in WGS84 names its CRS in a `crs` member (the 2008 GeoJSON spec's, which GDAL and QGIS read). A
scene without georeference keeps pixel coordinates (col, row) in every mode, flagged by
`"pixel_coordinates": true`.

Files are streamed: detections stay numpy arrays until written, and each format is produced
`base.rows.CHUNK` detections at a time, reprojected and formatted into a row template (see
scalemae_det/base/rows.py for why not json.dumps of dicts), so memory does not grow with the number
of detections (a 300k-detection scene held ~800 MB of feature dicts before). Output coordinates get
9 decimals (COORD: 1e-9 degree is 0.1 mm; RFC 7946 section 11.2 finds 6, about 10 cm, enough), which
formats twice as fast as the shortest round-trip repr; pixel boxes and scores keep that repr (what
json.dumps and csv write), so they read back exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.warp import transform as warp_transform

from scalemae_det.base.atomic import atomic_path
from scalemae_det.base.errors import InputError, ParameterError
from scalemae_det.base.rows import chunks, coco_results, coco_results_json, format_rows, literal
from scalemae_det.runtime.detector import SceneResult

FORMATS = {
    "geojson": ".geojson",
    "coco": ".json",
    "csv": ".csv",
    "gpkg": ".gpkg",
}  # gpkg: runtime/vector.py
CRS_WORDS = ("wgs84", "native")
WGS84 = "EPSG:4326"
COORD = "%.9f"  # output coordinates: 9 decimals
CSV_HEADER = ["scene", "label", "class_id", "score", "x1", "y1", "x2", "y2", "center_x", "center_y"]


def output_crs(text, param: str = "crs"):
    """A `crs` as every command takes it: "wgs84" (EPSG:4326 says the same), "native" (the scene's
    own), or a rasterio CRS for anything else rasterio reads (EPSG code, WKT, PROJ string)."""
    if not isinstance(text, str):
        return text
    if text.lower() in CRS_WORDS:
        return text.lower()
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        with rasterio.Env():  # GDAL reports through the exception, not on stderr
            crs = CRS.from_user_input(text)
    except CRSError as exc:
        raise ParameterError(
            param,
            f"not a CRS ({exc}); expected wgs84, native or one such as EPSG:32633",
            value=text,
        ) from None
    return "wgs84" if crs == CRS.from_epsg(4326) else crs


def target_crs(crs_mode, scene_crs):
    """The CRS that output coordinates are in, for a scene in `scene_crs` (None: pixels)."""
    if scene_crs is None or crs_mode == "native":
        return scene_crs
    return WGS84 if crs_mode == "wgs84" else crs_mode


def _to_output_crs(
    result: SceneResult, cols: np.ndarray, rows: np.ndarray, crs_mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Scene pixel coordinates -> output coordinates (map coordinates of the chosen CRS, or
    pixels)."""
    scene = result.scene
    if not scene.georeferenced:
        return cols, rows
    xs, ys = scene.transform @ (cols, rows)
    if crs_mode != "native" and len(xs):
        dst = target_crs(crs_mode, scene.crs)
        xs, ys = (np.asarray(v) for v in warp_transform(scene.crs, dst, xs.ravel(), ys.ravel()))
    return np.reshape(xs, cols.shape), np.reshape(ys, rows.shape)


def box_rings(
    result: SceneResult, crs_mode: str = "wgs84", part: slice = slice(None)
) -> np.ndarray:
    """(N, 5, 2) closed, counter-clockwise box outlines in output coordinates (of
    detections[part])."""
    from scalemae_det.runtime.vector import pixel_box_rings  # one outline rule for every format

    scene, boxes = result.scene, result.detections.boxes[part]
    if not scene.georeferenced:
        return pixel_box_rings(boxes, Affine.identity(), None, None)
    return pixel_box_rings(
        boxes,
        scene.transform,
        scene.crs,
        None if crs_mode == "native" else target_crs(crs_mode, scene.crs),
    )


def _crs_member(crs) -> dict:
    from rasterio.crs import CRS

    epsg = CRS.from_user_input(crs).to_epsg()
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def geojson_text(result: SceneResult, crs_mode: str = "wgs84") -> Iterator[str]:
    """The FeatureCollection, in pieces of at most CHUNK features."""
    det = result.detections
    head = '{"type": "FeatureCollection", '
    if not result.scene.georeferenced:
        head += '"pixel_coordinates": true, '
    elif crs_mode != "wgs84":
        crs = target_crs(output_crs(crs_mode), result.scene.crs)
        head += f'"crs": {json.dumps(_crs_member(crs))}, '
    yield head + '"features": ['
    template = (
        '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [['
        + ", ".join([f"[{COORD}, {COORD}]"] * 5)
        + ']]}, "properties": {"label": %s, "class_id": %d, "score": %r, '
        f'"scene": {literal(result.name)}, "pixel_bbox": [%r, %r, %r, %r]}}}}'
    )
    names = [json.dumps(name) for name in result.class_names]
    for k, part in enumerate(chunks(len(det))):
        labels = det.labels[part].tolist()
        columns = [
            *box_rings(result, crs_mode, part).reshape(-1, 10).T.tolist(),
            [names[c - 1] for c in labels],
            labels,
            det.scores[part].tolist(),
            *det.boxes[part].T.tolist(),
        ]
        yield ("," if k else "") + "\n" + ",\n".join(format_rows(template, columns))
    yield "\n]}\n"


def geojson(result: SceneResult, crs_mode: str = "wgs84") -> dict:
    """The GeoJSON document as a dict (for small results; files are written by streaming
    geojson_text)."""
    return json.loads("".join(geojson_text(result, crs_mode)))


def image_id(path: str) -> int | str:
    """COCO image id of a scene: its stem as a number when it is one (xView's "5.tif" -> 5), else
    its file name."""
    stem = Path(path).stem
    return int(stem) if stem.isdigit() else Path(path).name


def coco(result: SceneResult) -> list[dict]:
    """COCO results as dicts (category ids are the model's labels, 1..classes)."""
    det = result.detections
    return coco_results(image_id(result.name), det.boxes, det.scores, det.labels)


def coco_text(result: SceneResult, crs_mode: str = "wgs84") -> Iterator[str]:
    """COCO results (category ids are the model's labels, 1..classes; pixel boxes whatever
    `crs_mode`)."""
    det = result.detections
    return coco_results_json(image_id(result.name), det.boxes, det.scores, det.labels)


def _csv_field(text: str) -> str:
    """`text` as csv.writer writes a field (quoted when it holds a comma, quote or newline)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([text])
    return buffer.getvalue()[:-2]


def csv_text(result: SceneResult, crs_mode: str = "wgs84") -> Iterator[str]:
    """The CSV file (csv.writer's dialect: comma, minimal quoting, CRLF), in pieces of at most CHUNK
    rows."""
    det = result.detections
    yield ",".join(CSV_HEADER) + "\r\n"
    template = (
        _csv_field(result.name).replace("%", "%%") + f",%s,%d,%r,%r,%r,%r,%r,{COORD},{COORD}\r\n"
    )
    names = [_csv_field(name) for name in result.class_names]
    for part in chunks(len(det)):
        b = det.boxes[part].astype(np.float64)
        xs, ys = _to_output_crs(result, (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, crs_mode)
        labels = det.labels[part].tolist()
        columns = [
            [names[c - 1] for c in labels],
            labels,
            det.scores[part].tolist(),
            *b.T.tolist(),
            np.asarray(xs, np.float64).tolist(),
            np.asarray(ys, np.float64).tolist(),
        ]
        yield "".join(format_rows(template, columns))


TEXT = {"geojson": geojson_text, "coco": coco_text, "csv": csv_text}


def output_path(out_dir: str | os.PathLike, scene, fmt: str) -> Path:
    """OUT/<stem>.<format> of a scene: a path, or a runtime.inputs.Source (its `stem`)."""
    stem = scene.stem if hasattr(scene, "stem") else Path(scene).stem
    return Path(out_dir) / (stem + FORMATS[fmt])


def write(
    result: SceneResult, path: str | os.PathLike, fmt: str = "geojson", crs_mode: str = "wgs84"
) -> Path:
    """Write one scene's detections, streamed; the file appears complete or not at all."""
    if fmt == "gpkg":
        from scalemae_det.runtime.vector import write_scene_layer

        return write_scene_layer(result, path, crs_mode)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        fh.writelines(TEXT[fmt](result, crs_mode))
    return Path(path)


@dataclass(frozen=True)
class ReadBack:
    """Detections read back from predict's or merge's files, one row per detection.

    `scenes` holds each row's scene: its file name (GeoJSON, CSV, GeoPackage, FlatGeobuf) or its
    COCO `image_id`; `labels` the class names, None for COCO results, which carry only ids.
    """

    scenes: np.ndarray  # (N,) object
    labels: np.ndarray | None  # (N,) object
    class_ids: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) float64
    boxes: np.ndarray  # (N, 4) float64, xyxy scene pixels

    def __len__(self) -> int:
        return len(self.scores)


def _rows(path: Path) -> tuple[list, list | None, list, list, list]:
    suffix = path.suffix.lower()
    if suffix in (".gpkg", ".fgb"):
        from scalemae_det.runtime.vector import read_columns

        scenes, labels, ids, scores, *box = read_columns(
            path, ["scene", "label", "class_id", "score", "px_x1", "px_y1", "px_x2", "px_y2"]
        )
        return list(scenes), list(labels), list(ids), list(scores), list(zip(*box))
    if suffix == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        boxes = [[r["x1"], r["y1"], r["x2"], r["y2"]] for r in rows]
        return (
            [r["scene"] for r in rows],
            [r["label"] for r in rows],
            [r["class_id"] for r in rows],
            [r["score"] for r in rows],
            boxes,
        )
    try:
        doc = json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        props = [(f or {}).get("properties") or {} for f in doc.get("features") or []]
        return (
            [p["scene"] for p in props],
            [p["label"] for p in props],
            [p["class_id"] for p in props],
            [p["score"] for p in props],
            [p["pixel_bbox"] for p in props],
        )
    if isinstance(doc, list):  # COCO results: bbox is x, y, w, h
        boxes = [[float(v) for v in e["bbox"]][:4] for e in doc]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in boxes]
        return (
            [e["image_id"] for e in doc],
            None,
            [e["category_id"] for e in doc],
            [e["score"] for e in doc],
            boxes,
        )
    raise InputError(f"{path}: neither a GeoJSON FeatureCollection nor a list of COCO results")


def read_detections(path: str | os.PathLike) -> ReadBack:
    """The detections of one file that predict (any --format) or merge wrote, recognised by its
    suffix (.gpkg, .fgb, .csv) or, for JSON, by its content (GeoJSON or COCO results)."""
    from scalemae_det.base.errors import MissingPathError

    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path}: no such file")
    try:
        scenes, labels, ids, scores, boxes = _rows(path)
        table = ReadBack(
            np.asarray(scenes, object),
            None if labels is None else np.asarray([str(v) for v in labels], object),
            np.asarray(ids, np.float64).astype(np.int64),
            np.asarray(scores, np.float64),
            np.asarray(boxes, np.float64).reshape(-1, 4),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(
            f"{path}: not a file of detections as predict writes them ({type(exc).__name__}: {exc})"
        ) from None
    return table
