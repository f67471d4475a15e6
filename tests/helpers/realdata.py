"""Where the real rasters are, and the one way tests ask for a raster: real when present, else skip.

The real GeoTIFFs (from rasterio's own test data) sit in `../shared/realdata` beside the repository
on CI and the project's machines, not on a user's fresh clone. Each test that reads one is
parametrised over ORIGINS: "made" writes an equivalent with helpers.rasters (always runs), "real"
uses the file or skips saying why. SCALEMAE_DET_REALDATA points elsewhere; naming a folder that does
not exist runs the suite as a fresh clone would (`SCALEMAE_DET_REALDATA=/nonexistent pytest`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.rasters import MADE

ENV = "SCALEMAE_DET_REALDATA"
ORIGINS = ("made", "real")
# the files of ../shared/realdata/README.md, each with an equivalent in helpers.rasters
NAMES = (
    "RGB.byte.tif",
    "RGBA.uint16.tif",
    "all-nodata.tif",
    "corrupt.tif",
    "float_nan.tif",
    "rgb1_fake_nir_epsg3857.tif",
    "rotated.tif",
    "shade.tif",
    "world.rgb.tif",
)


def realdata_dir() -> Path:
    return Path(os.environ.get(ENV) or Path(__file__).resolve().parents[3] / "shared" / "realdata")


def real(name: str) -> Path:
    """The real raster `name`, or a skip that says where it was looked for and how to point
    elsewhere."""
    path = realdata_dir() / name
    if not path.is_file():
        pytest.skip(
            f"real raster {path} absent (fresh clone; set {ENV} to its folder); "
            "the generated equivalent is tested instead"
        )
    return path


def raster(name: str, origin: str, folder: Path) -> Path:
    """The real `name` (origin "real") or its generated equivalent written in `folder` (origin
    "made")."""
    if origin == "real":
        return real(name)
    path = folder / name
    if not path.exists():
        MADE[name](path)
    return path
