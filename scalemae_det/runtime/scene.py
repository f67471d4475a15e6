"""A scene as the model will see it: bands, value range, scale, tiles; and its tiles read in
batches.

The GSD decides the resampling: in `resample` mode tiles are read so that a model pixel covers the
model's GSD; in `as-is` mode pixels are taken as they are. Everything about the raster that is
computed once (band choice, stretch, tile plan) is computed here, before any tile is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio
from affine import Affine

from scalemae_det.base import checks
from scalemae_det.base.errors import ParameterError
from scalemae_det.base.geo import gsd_m
from scalemae_det.base.metadata import DEFAULT_OVERLAP, ModelMetadata
from scalemae_det.base.pixels import (
    FILL,
    ValueRange,
    masked_inside,
    raster_errors,
    read_unit,
    select_bands,
    value_range,
)
from scalemae_det.base.remote import open_path, reading
from scalemae_det.runtime.inputs import Source, as_source
from scalemae_det.runtime.tiling import Tile, plan

GSD_MODES = ("resample", "as-is")
MAX_RESAMPLE = 4.0  # beyond this the scene is not what the model was made for
GSD_TOLERANCE = 0.25  # as-is mode warns past this relative mismatch
STAC_GSD_TOLERANCE = 0.1  # a STAC item's gsd this far from the raster's own is said in a note
# GDAL's block cache defaults to 5% of RAM and would end up holding much of a large scene; a row of
# tiles is what reads reuse (overlaps), so a bounded cache keeps memory flat at any scene size.
# rasterio.Env hands an integer GDAL_CACHEMAX to GDALSetCacheMax64, in bytes (rasterio/_env.pyx,
# set_gdal_config), not in megabytes as GDAL's own config option reads it: 32 there would be a
# cache of 32 bytes, and each overlapping tile would fetch its blocks again.
GDAL_CACHE_MB = 32
GDAL_CACHE_BYTES = GDAL_CACHE_MB * 1024 * 1024


@dataclass
class Scene:
    path: str
    width: int
    height: int
    crs: object  # rasterio CRS, None without georeference
    transform: Affine
    gsd: float | None  # metres, None without a CRS
    bands: list[int]
    value_range: ValueRange
    factor: float  # scene pixels per model pixel
    tiles: list[Tile]  # the tiles to read: those meeting the area of interest, when one is given
    notes: list[str] = field(default_factory=list)  # warnings for the user
    name: str = ""  # the scene's name (runtime.inputs.Source.name), in outputs
    tiles_outside: int = 0  # tiles of the plan left out: outside the area of interest
    area_rings: list | None = None  # the area in scene pixels (runtime.aoi), None without one

    def __post_init__(self):
        self.name = self.name or as_source(self.path).name

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def outside_area(self) -> bool:
        """The area of interest does not touch the scene: nothing to read."""
        return not self.tiles and self.tiles_outside > 0


def _factor(
    path: str, gsd: float | None, meta: ModelMetadata, mode: str, notes: list[str]
) -> float:
    if gsd is None:
        notes.append(
            "no georeference (no CRS): pixels used as they are, outputs in pixel coordinates"
        )
        return 1.0
    ratio = meta.gsd / gsd
    if mode == "as-is":
        if abs(gsd / meta.gsd - 1) > GSD_TOLERANCE:
            way = (
                f"{gsd / meta.gsd:.3g}x coarser"
                if gsd > meta.gsd
                else f"{meta.gsd / gsd:.3g}x finer"
            )
            notes.append(
                f"GSD {gsd:.3g} m is {way} than the model's {meta.gsd:.3g} m (as-is mode): "
                "objects look smaller or larger than the model learnt them"
            )
        return 1.0
    if not 1 / MAX_RESAMPLE <= ratio <= MAX_RESAMPLE:
        way = f"upsampling {1 / ratio:.3g}x" if ratio < 1 else f"downsampling {ratio:.3g}x"
        raise ParameterError(
            "gsd_mode",
            f"GSD {gsd:.3g} m vs the model's {meta.gsd:.3g} m would need {way} "
            f"(limit {MAX_RESAMPLE:g}x); use `gsd_mode` as-is, or a model exported for this GSD",
            source=path,
        )
    return ratio


def check_tiling_options(gsd_mode: str, overlap: float) -> None:
    """The option errors that need no raster; the CLI checks them once, before any scene."""
    checks.choice("gsd_mode", gsd_mode, GSD_MODES)
    checks.number("overlap", overlap, lo=0, hi=1, hi_open=True)


def open_scene(
    path: str | os.PathLike | Source,
    meta: ModelMetadata,
    *,
    bands: Sequence[int] | None = None,
    scale: str | tuple[float, float] = "auto",
    gsd_mode: str = "resample",
    overlap: float = DEFAULT_OVERLAP,
    area=None,
) -> Scene:
    """Inspect a raster (a file, a URL, or a runtime.inputs.Source) and plan its tiles: those
    meeting `area` (a runtime.aoi.Area) when given. Reads only a decimated copy, for the stretch,
    over the tiles to be read."""
    source = as_source(path)
    path = source.path
    check_tiling_options(gsd_mode, overlap)
    with reading(path), raster_errors(path, "not a readable raster"):
        ds = rasterio.open(open_path(path))
    with reading(path), ds:
        crs = ds.crs
        gsd = gsd_m(crs, ds.transform, ds.width, ds.height)
        chosen = select_bands(ds, bands)
        notes: list[str] = list(source.notes)
        _check_stac_gsd(source.gsd, gsd, notes)
        factor = _factor(path, gsd, meta, gsd_mode, notes)
        inside = masked_inside(ds, chosen)
        if inside:
            share = inside / (ds.width * ds.height)
            notes.append(
                f"its declared nodata {ds.nodatavals[chosen[0] - 1]:g} also occurs "
                f"inside the image: about {inside} pixel(s) ({share:.2%}) "
                "of that value in every band are read as nodata and hide what they show; if they "
                "are data, unset the nodata (`gdal_edit.py -unsetnodata`)"
            )
        src = max(1, round(meta.tile * factor))
        tiles = plan(ds.width, ds.height, src, meta.tile, overlap)
        rings, planned = None, len(tiles)
        if area is not None and crs is None:
            notes.append("`aoi` cannot apply without georeference: the whole scene is run")
        elif area is not None:
            from scalemae_det.runtime.aoi import tiles_meeting

            rings = area.in_pixels(crs, ds.transform)
            tiles = [t for t, meets in zip(tiles, tiles_meeting(rings, tiles)) if meets]
        vr = value_range(ds, chosen, scale, window=_span(tiles)) if tiles else None
        return Scene(
            path,
            ds.width,
            ds.height,
            crs,
            ds.transform,
            gsd,
            chosen,
            vr,
            src / meta.tile,
            tiles,
            notes,
            source.name,
            planned - len(tiles),
            rings,
        )


def _span(tiles: list[Tile]):
    """The window covering `tiles` (where the stretch is measured)."""
    from rasterio.windows import Window

    left, top = min(t.col for t in tiles), min(t.row for t in tiles)
    right = max(t.col + t.width for t in tiles)
    bottom = max(t.row + t.height for t in tiles)
    return Window(left, top, right - left, bottom - top)


def _check_stac_gsd(stated: float | None, measured: float | None, notes: list[str]) -> None:
    if stated is None or measured is None:
        return
    if abs(measured / stated - 1) > STAC_GSD_TOLERANCE:
        notes.append(
            f"the STAC item states a GSD of {stated:.3g} m, the raster's pixels measure "
            f"{measured:.3g} m on the ground: the raster's is used"
        )


@dataclass
class Batch:
    images: np.ndarray  # (n, 3, T, T) float32, padded with FILL
    nodata: np.ndarray  # (n, T, T) bool, padding counts as nodata
    tiles: list[Tile]
    skipped: int  # all-nodata tiles passed over since the previous batch


def batches(scene: Scene, size: int, tile: int) -> Iterator[Batch]:
    """Read the scene's tiles in order, `size` at a time, leaving out all-nodata tiles."""

    def fresh() -> tuple[np.ndarray, np.ndarray]:
        return np.full((size, 3, tile, tile), FILL, np.float32), np.ones((size, tile, tile), bool)

    images, nodata = fresh()
    chosen: list[Tile] = []
    skipped = 0
    with (
        reading(scene.path, GDAL_CACHEMAX=GDAL_CACHE_BYTES),
        raster_errors(scene.path, "not a readable raster"),
    ):
        ds = rasterio.open(open_path(scene.path))
    with reading(scene.path, GDAL_CACHEMAX=GDAL_CACHE_BYTES), ds:
        for t in scene.tiles:
            unit, mask = read_unit(
                ds, scene.bands, t.window, scene.value_range, out_shape=(t.out_height, t.out_width)
            )
            if mask.all():
                skipped += 1
                continue
            k = len(chosen)
            images[k, :, : t.out_height, : t.out_width] = unit
            nodata[k, : t.out_height, : t.out_width] = mask
            chosen.append(t)
            if len(chosen) == size:  # handed over as they are: the next batch gets new buffers
                yield Batch(images, nodata, chosen, skipped)
                images, nodata = fresh()
                chosen, skipped = [], 0
    if chosen or skipped:
        n = len(chosen)
        yield Batch(images[:n].copy(), nodata[:n].copy(), chosen, skipped)
