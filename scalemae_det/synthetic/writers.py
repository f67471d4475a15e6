"""Georeferenced GeoTIFF scenes and training chips with COCO ground truth beside them."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window
from rich.progress import Progress

from scalemae_det.base import checks
from scalemae_det.base.atomic import atomic_path
from scalemae_det.base.errors import InputError
from scalemae_det.base.geo import gsd_m
from scalemae_det.base.pixels import raster_errors
from scalemae_det.synthetic.layout import CLASS_NAMES, Layout, make_scene
from scalemae_det.synthetic.render import render_window

MIN_SIZE = 64
CATEGORIES = [
    {"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(CLASS_NAMES)
]


def _size(path: Path, size: int | tuple[int, int]) -> tuple[int, int]:
    width, height = (size, size) if isinstance(size, int) else size
    for side in (width, height):
        checks.number("size", side, lo=MIN_SIZE, integer=True, source=str(path))
    return int(width), int(height)


def _georef(path: Path, crs: str, gsd: float) -> tuple[CRS, float, float]:
    """The CRS and an upper-left corner inside its area, where its metres are ground metres."""
    checks.number("gsd", gsd, lo=0, lo_open=True, source=str(path))
    try:
        with rasterio.Env():  # GDAL reports through the exception, not on stderr
            crs_obj = CRS.from_user_input(crs)
    except CRSError as exc:
        raise InputError(f"{path}: invalid CRS {crs!r}: {exc}") from None
    if not crs_obj.is_projected or crs_obj.linear_units not in ("metre", "meter"):
        raise InputError(
            f"{path}: CRS {crs} is not projected in metres; use one such as a UTM zone"
        )
    params = crs_obj.to_dict()
    lon = params["zone"] * 6 - 183 if "zone" in params else params.get("lon_0", 0.0)
    lat = params.get("lat_0") or (-30.0 if params.get("south") else 45.0)
    (x,), (y,) = warp_transform("EPSG:4326", crs_obj, [lon], [lat])
    x0, y0 = round(x, -3), round(y, -3)
    true_gsd = gsd_m(crs_obj, Affine(gsd, 0, x0, 0, -gsd, y0), 1000, 1000)
    if abs(true_gsd / gsd - 1) > 0.02:
        raise InputError(
            f"{path}: CRS {crs} distorts scale by {true_gsd / gsd - 1:+.0%} here; use a local CRS "
            "such as UTM"
        )
    return crs_obj, x0, y0


def _write_tif(
    path: Path,
    scene: Layout,
    crs: CRS,
    transform: Affine,
    block_rows: int,
    progress: Progress | None = None,
) -> None:
    profile = dict(
        driver="GTiff",
        width=scene.width,
        height=scene.height,
        count=3,
        dtype="uint8",
        crs=crs,
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        predictor=2,
        photometric="RGB",
        interleave="pixel",
        BIGTIFF="IF_SAFER",
        nodata=0 if scene.collar else None,
    )
    task = progress.add_task(f"rendering {path.name}", total=scene.height) if progress else None
    with (
        raster_errors(path, "writing failed"),
        atomic_path(path) as tmp,
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        for row in range(0, scene.height, block_rows):
            h = min(block_rows, scene.height - row)
            dst.write(
                render_window(scene, row, 0, h, scene.width), window=Window(0, row, scene.width, h)
            )
            if progress:
                progress.advance(task, h)


def _annotations(scene: Layout, transform: Affine, image_id: int, first_id: int) -> list[dict]:
    anns = []
    for k, o in enumerate(scene.objects):
        x0, y0, x1, y1 = (round(float(v) / scene.gsd, 2) for v in o.bbox_m())
        (mx0, mx1), (my1, my0) = zip(transform @ (x0, y0), transform @ (x1, y1))
        anns.append(
            {
                "id": first_id + k,
                "image_id": image_id,
                "category_id": o.category,
                "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round((x1 - x0) * (y1 - y0), 2),
                "iscrowd": 0,
                "bbox_map": [min(mx0, mx1), min(my0, my1), max(mx0, mx1), max(my0, my1)],
            }
        )
    return anns


def _image(image_id: int, name: str, scene: Layout, crs: CRS) -> dict:
    return {
        "id": image_id,
        "file_name": name,
        "width": scene.width,
        "height": scene.height,
        "gsd": scene.gsd,
        "crs": crs.to_string(),
    }


def _write_json(path: Path, coco: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(coco))


def write_scene(
    path: str | os.PathLike,
    size: int | tuple[int, int],
    seed: int = 0,
    gsd: float = 0.5,
    crs: str = "EPSG:32633",
    nodata_collar: bool = False,
    block_rows: int = 512,
) -> dict:
    """Write a streamed GeoTIFF scene and `<stem>.json` (COCO) beside it; return the COCO dict."""
    path = checks.output_file(path, "out")
    checks.output_file(path.with_suffix(".json"))
    width, height = _size(path, size)
    crs_obj, x0, y0 = _georef(path, crs, gsd)
    transform = Affine(gsd, 0, x0, 0, -gsd, y0)
    scene = make_scene(width, height, gsd, seed, nodata_collar)
    with Progress(disable=width * height < 4096 * 4096, transient=True) as progress:
        _write_tif(path, scene, crs_obj, transform, block_rows, progress)
    coco = {
        "images": [_image(1, path.name, scene, crs_obj)],
        "annotations": _annotations(scene, transform, 1, 1),
        "categories": CATEGORIES,
    }
    _write_json(path.with_suffix(".json"), coco)
    return coco


def write_chips(
    out_dir: str | os.PathLike,
    count: int,
    size: int = 256,
    seed: int = 0,
    gsd: float | tuple[float, float] = 0.5,
    crs: str = "EPSG:32633",
) -> Path:
    """Write `count` GeoTIFF chips (GSD fixed or uniform in a (min, max) range) and labels.json."""
    out = Path(out_dir)
    labels = out / "labels.json"
    checks.number("count", count, lo=1, integer=True)
    _size(out, size)
    lo, hi = (gsd, gsd) if isinstance(gsd, (int, float)) else gsd
    crs_obj, x0, y0 = _georef(out, crs, lo)
    _georef(out, crs, hi)
    checks.number("gsd_max", hi, lo=lo)
    if labels.is_dir():
        raise InputError(f"{labels}: is a folder; cannot write the labels there")
    checks.output_dir(out, "out")
    gsds = np.round(np.random.default_rng([seed, 2]).uniform(lo, hi, count), 4)
    images, anns = [], []
    side, step = (
        math.ceil(math.sqrt(count)),
        1000 * math.ceil(size * hi / 1000),
    )  # a grid: chips never overlap
    with Progress(disable=count < 50, transient=True) as progress:
        task = progress.add_task(f"writing {count} chips", total=count)
        for i, g in enumerate(gsds.tolist()):
            chip_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
            scene = make_scene(size, size, g, chip_seed)
            transform = Affine(g, 0, x0 + step * (i % side), 0, -g, y0 - step * (i // side))
            name = f"chip_{i:05d}.tif"
            _write_tif(out / name, scene, crs_obj, transform, size)
            images.append(_image(i + 1, name, scene, crs_obj))
            anns += _annotations(scene, transform, i + 1, len(anns) + 1)
            progress.advance(task)
    _write_json(labels, {"images": images, "annotations": anns, "categories": CATEGORIES})
    return labels
