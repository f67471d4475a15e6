"""The scenes a run is given: files, directories (their rasters) and glob patterns, in a stable
order."""

from __future__ import annotations

import glob
from pathlib import Path

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img", ".ntf"}
IMAGE_SUFFIXES = RASTER_SUFFIXES | {".png", ".jpg", ".jpeg"}  # plain images too (`prepare`)


def expand_scenes(
    items: list[str], suffixes: set[str] = RASTER_SUFFIXES
) -> tuple[list[Path], list[str]]:
    """Files, directories (their files of `suffixes`) and glob patterns -> scene paths, and
    problems (one line each)."""
    scenes, problems = [], []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file()
            )
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
        elif path.exists():
            found = [path]
        else:
            problems.append(f"{item}: no such file")
            continue
        if not found:
            problems.append(f"{item}: no raster files there")
        scenes.extend(found)
    return list(dict.fromkeys(scenes)), problems
