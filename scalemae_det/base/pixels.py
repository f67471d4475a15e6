"""Pixel values the model sees, shared by training and inference so both read a raster alike.

Torch-free (numpy + rasterio). All band numbers are rasterio's, 1-based.

    bands = select_bands(ds, None)            # [r, g, b] by colour interpretation, else the first
                                              # three non-alpha bands; one band -> [b, b, b]
    vr = value_range(ds, bands, "auto")       # once per raster: None for uint8 (/255), else
                                              # per-band (lo, hi) from a 2-98% stretch of a
                                              # decimated read; or scale=(lo, hi) given by the user
    unit, nodata = read_unit(ds, bands, window, vr, out_shape=(h, w))
                                              # (3, h, w) float32 in [0, 1], nodata pixels = FILL;
                                              # (h, w) bool, True where nodata

`nodata_mask` and `to_unit` are the two halves of `read_unit` for callers holding their own arrays.
The stretch is computed once per raster, not per tile, so tiles of one scene agree.
Nodata is the GDAL notion (nodata value, internal/external mask, alpha band) plus NaN: a pixel is
nodata when every selected band says so, or when any of its values is NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioError

from scalemae_det.base import checks
from scalemae_det.base.errors import InputError, ParameterError
from scalemae_det.base.remote import explain, open_path, reading, shown

FILL = 0.0  # value of nodata pixels (and of padding) in [0, 1] units
PERCENTILES = (2.0, 98.0)
STATS_SIDE = 1024  # longest side of the decimated read the stretch is computed from

ValueRange = tuple[np.ndarray, np.ndarray] | None  # per-band (lo, hi); None means uint8 / 255


def gdal_cause(exc: RasterioError) -> str:
    """The line that says what went wrong: rasterio's own message is often "Read or write failed.
    See
    previous exception for details", with GDAL's error (the previous exception) as its cause."""
    return (str(exc.__cause__ or exc).strip().splitlines() or [type(exc).__name__])[0]


@contextmanager
def raster_errors(path, problem: str = "reading failed", window=None) -> Iterator[None]:
    """Turn GDAL failures (corrupt files, truncated tiles, a full disk, a network that failed) into
    one-line user errors that name the file and GDAL's own reason: rasterio often raises "See
    previous exception for details" with the reason only in the exception's cause. A URL is named
    without its credentials and a network failure said plainly (base.remote.explain)."""
    try:
        yield
    except RasterioError as exc:
        where = (
            f" at window (col {window.col_off}, row {window.row_off})" if window is not None else ""
        )
        reason = explain(path, gdal_cause(exc))
        raise InputError(f"{shown(path)}: {problem}{where}: {reason}") from None


@contextmanager
def open_raster(source) -> Iterator:
    """`rasterio.open(source)` for reading, quiet about PNG/JPEG without a georeference (expected);
    a failed open or read is a one-line UserError naming the file. `source` is a path, a URL (read
    through GDAL's virtual file systems under base.remote.reading's settings) or anything with a
    `path` that is one (runtime.inputs.Source). The one place images are opened for reading by
    name, so that every kind of source opens the same way everywhere."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    where = str(getattr(source, "path", source))
    with reading(where), raster_errors(where), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # PNG/JPEG: expected
        with rasterio.open(open_path(where)) as ds:
            yield ds


def select_bands(ds, bands: Sequence[int] | None = None) -> list[int]:
    """Three 1-based band numbers for the model's RGB input."""
    if bands:
        bands = checks.bands("bands", bands)
        bad = [b for b in bands if b > ds.count]
        if bad:
            raise ParameterError(
                "bands",
                f"band {bad[0]} requested but the raster has {ds.count} band(s)",
                value=bands,
                source=ds.name,
            )
        return bands * 3 if len(bands) == 1 else bands
    interp = list(ds.colorinterp)
    rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(c in interp for c in rgb):
        return [interp.index(c) + 1 for c in rgb]
    colour = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
    if len(colour) >= 3:
        return colour[:3]
    if len(colour) == 1:
        return colour * 3
    raise ParameterError(
        "bands", f"{len(colour)} colour bands; choose 1 or 3 of them with `bands`", source=ds.name
    )


def _dtype(ds, bands: Sequence[int]) -> np.dtype:
    return np.result_type(*(ds.dtypes[b - 1] for b in bands))


def value_range(
    ds,
    bands: Sequence[int],
    scale: str | tuple[float, float] = "auto",
    percentiles: tuple[float, float] = PERCENTILES,
    window=None,
) -> ValueRange:
    """How raw values map to [0, 1]: None for uint8 with scale "auto", else per-band (lo, hi),
    measured over `window` (a rasterio Window; the whole raster when None)."""
    n = len(bands)
    scale = checks.value_scale("scale", scale)
    if not isinstance(scale, str):
        lo, hi = scale
        return np.full(n, lo), np.full(n, hi)
    dtype = _dtype(ds, bands)
    if dtype == np.uint8:
        return None
    width, height = (
        (ds.width, ds.height) if window is None else (int(window.width), int(window.height))
    )
    factor = max(width, height) / STATS_SIDE
    shape = (
        (max(1, round(height / factor)), max(1, round(width / factor)))
        if factor > 1
        else (height, width)
    )
    with raster_errors(
        ds.name
    ):  # a decimated read: GDAL serves it from overviews when the file has them
        data = ds.read(bands, window=window, out_shape=(n, *shape), resampling=Resampling.nearest)
    valid = ~nodata_mask(ds, bands, window=window, out_shape=shape, data=data)
    if np.issubdtype(dtype, np.integer):
        fallback = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    else:
        fallback = 0.0, 1.0
    lo, hi = np.full(n, fallback[0]), np.full(n, fallback[1])
    if valid.any():
        for i in range(n):
            lo[i], hi[i] = np.percentile(data[i][valid], percentiles)
        hi = np.where(hi > lo, hi, lo + 1)  # a constant band maps to 0 instead of dividing by 0
    return lo, hi


def nodata_mask(
    ds,
    bands: Sequence[int],
    window=None,
    out_shape: tuple[int, int] | None = None,
    data: np.ndarray | None = None,
) -> np.ndarray:
    """(h, w) bool, True where nodata. `data`, when given, is the same read (for its NaNs)."""
    unique = sorted(set(bands))
    if data is not None:
        shape = data.shape[1:]
    elif out_shape is not None:
        shape = out_shape
    else:
        shape = (window.height, window.width) if window is not None else (ds.height, ds.width)
    shape = tuple(int(s) for s in shape)
    if all(ds.mask_flag_enums[b - 1] == [MaskFlags.all_valid] for b in unique):
        mask = np.zeros(shape, bool)
    else:
        with raster_errors(ds.name, window=window):
            masks = ds.read_masks(
                unique,
                window=window,
                out_shape=(len(unique), *shape),
                resampling=Resampling.nearest,
            )
        mask = (masks == 0).all(axis=0)
    if data is not None and np.issubdtype(data.dtype, np.floating):
        mask |= np.isnan(data).any(axis=0)
    return mask


def masked_inside(ds, bands: Sequence[int]) -> int:
    """About how many pixels inside the image the declared nodata value masks: 0 when the raster
    declares no nodata value (an alpha band or a mask is explicit, not a value that data can take).

    A nodata collar lies at the ends of rows and columns; a pixel masked between two valid pixels of
    its row and between two of its column is inside the data, so its value also occurs as data (a
    uint8 scene with nodata 255 loses its brightest pixels). Counted on the same decimated read as
    the stretch (nearest neighbour samples isolated pixels in proportion) and scaled to the full
    size.
    """
    unique = sorted(set(bands))
    values = [ds.nodatavals[b - 1] for b in unique]
    if any(v is None or math.isnan(v) for v in values):  # NaN is never data
        return 0
    factor = max(1.0, max(ds.width, ds.height) / STATS_SIDE)
    shape = (max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
    with raster_errors(ds.name):
        data = ds.read(unique, out_shape=(len(unique), *shape), resampling=Resampling.nearest)
    masked = np.all([band == v for band, v in zip(data, values)], axis=0)
    valid = ~masked
    inside = masked & _between(valid, axis=1) & _between(valid, axis=0)
    return round(int(inside.sum()) * (ds.width * ds.height) / (shape[0] * shape[1]))


def _between(valid: np.ndarray, axis: int) -> np.ndarray:
    """True where a valid pixel lies both before and after along `axis`."""
    before = np.maximum.accumulate(valid, axis=axis)
    after = np.flip(np.maximum.accumulate(np.flip(valid, axis), axis=axis), axis)
    return before & after


def to_unit(data: np.ndarray, vr: ValueRange, nodata: np.ndarray | None = None) -> np.ndarray:
    """(C, h, w) raw values -> float32 in [0, 1]; nodata pixels set to FILL."""
    if vr is None:
        if data.dtype != np.uint8:
            raise ValueError(f"a value range is needed for {data.dtype} data")
        unit = data.astype(np.float32) / np.float32(255)
    else:
        lo, hi = (np.asarray(v, np.float32)[:, None, None] for v in vr)
        unit = np.clip((data.astype(np.float32) - lo) / (hi - lo), 0, 1)
    if nodata is not None:
        unit[:, nodata] = FILL
    return np.nan_to_num(unit, copy=False, nan=FILL)


def read_unit(
    ds,
    bands: Sequence[int],
    window,
    vr: ValueRange,
    out_shape: tuple[int, int] | None = None,
    resampling: Resampling = Resampling.bilinear,
) -> tuple[np.ndarray, np.ndarray]:
    """Read `window` (optionally resampled to out_shape) as model input values and its nodata
    mask."""
    unique = sorted(set(bands))
    shape = out_shape or (int(window.height), int(window.width))
    with raster_errors(ds.name, window=window):
        raw = ds.read(unique, window=window, out_shape=(len(unique), *shape), resampling=resampling)
    data = raw[[unique.index(b) for b in bands]]
    mask = nodata_mask(ds, bands, window=window, data=data)
    return to_unit(data, vr, mask), mask


__all__ = [
    "FILL",
    "ValueRange",
    "gdal_cause",
    "masked_inside",
    "nodata_mask",
    "open_raster",
    "read_unit",
    "raster_errors",
    "select_bands",
    "to_unit",
    "value_range",
]
