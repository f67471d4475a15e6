"""Labelled imagery in every format `prepare` reads, written from pixel boxes the tests choose.

    scene(path, w, h, crs=..., transform=...)    a small RGB raster (GeoTIFF or PNG by suffix)
    voc(path, image_name, w, h, objects)          a Pascal VOC annotation file
    yolo(folder, stem, w, h, objects, names)      a YOLO txt line per object (normalised by hand)
    geo_rings(header, boxes, crs)                 pixel boxes -> closed rings in `crs`, corner by
                                                  corner through the scene's affine transform and
                                                  rasterio's warp (the independent reference)
    vector(path, rings, classes, crs, driver)     a polygon layer written with pyogrio

`objects` are (class name, (xmin, ymin, xmax, ymax)) in pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning


def scene(path: Path, width: int, height: int, seed: int = 0, **profile) -> Path:
    """A random RGB uint8 raster; PNG (no georeference) when the suffix says so."""
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 256, (3, height, width), dtype=np.uint8)
    driver = "PNG" if path.suffix.lower() == ".png" else "GTiff"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver=driver, width=width, height=height, count=3, dtype="uint8", **profile
        ) as dst:
            dst.write(data)
    return path


def voc(path: Path, image_name: str, width: int, height: int, objects) -> Path:
    parts = [
        "<annotation>",
        "  <folder>images</folder>",
        f"  <filename>{image_name}</filename>",
        f"  <path>/home/someone/labelling/{image_name}</path>",
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for name, (x0, y0, x1, y1) in objects:
        parts += [
            "  <object>",
            f"    <name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>",
            "    <difficult>0</difficult>",
            f"    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
            "</bndbox>",
            "  </object>",
        ]
    path.write_text("\n".join([*parts, "</annotation>", ""]))
    return path


def yolo(folder: Path, stem: str, width: int, height: int, objects, names: list[str]) -> Path:
    lines = []
    for name, (x0, y0, x1, y1) in objects:
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        w, h = (x1 - x0) / width, (y1 - y0) / height
        lines.append(f"{names.index(name)} {cx:.9f} {cy:.9f} {w:.9f} {h:.9f}")
    path = folder / f"{stem}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def geo_rings(transform, src_crs, boxes, dst_crs=None) -> np.ndarray:
    """(N, 5, 2) closed rings of pixel boxes in `dst_crs` (or the scene's own CRS)."""
    from rasterio.warp import transform as warp

    b = np.asarray(boxes, float).reshape(-1, 4)
    cols = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0], b[:, 0]], 1)
    rows = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3], b[:, 1]], 1)
    xs, ys = transform @ (cols.ravel(), rows.ravel())
    if dst_crs is not None and dst_crs != src_crs:
        xs, ys = warp(src_crs, dst_crs, list(xs), list(ys))
    return np.stack([np.asarray(xs), np.asarray(ys)], 1).reshape(-1, 5, 2)


def _polygon_wkb(ring: np.ndarray) -> bytes:
    import struct

    return struct.pack("<BIII", 1, 3, 1, len(ring)) + np.asarray(ring, "<f8").tobytes()


def _point_wkb(x: float, y: float) -> bytes:
    import struct

    return struct.pack("<BIdd", 1, 1, x, y)


def vector(
    path: Path,
    geometries,
    classes: list[str],
    crs: str | None,
    driver: str,
    field: str = "kind",
    points: bool = False,
) -> Path:
    """A layer of polygons (rings) or points ((x, y) pairs), one `field` attribute, in `crs`."""
    from pyogrio.raw import write

    wkb = np.array(
        [_point_wkb(*g) if points else _polygon_wkb(g) for g in geometries], dtype=object
    )
    write(
        path,
        wkb,
        [np.array(classes, dtype=object), np.arange(len(classes))],
        [field, "serial"],
        geometry_type="Point" if points else "Polygon",
        crs=crs,
        driver=driver,
    )
    return path
