"""The scenes a run is given, in a stable order: files, directories (their rasters), glob patterns,
URLs (https://, s3://, gs://, az://; read where they live, see base/remote.py) and STAC documents
(an Item or ItemCollection, a file or a URL, whose name ends in .json; see runtime/stac.py).

Each becomes a `Source`: what GDAL opens, and the scene's name, by which its output is named
(OUT/<stem>.<format>), its shard chosen and its records kept. The name of a file or a URL is its
file name (a URL's without its query string); a STAC item's is its id.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from scalemae_det.base.remote import is_url, shown, url_name, url_problem

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img", ".ntf"}
IMAGE_SUFFIXES = RASTER_SUFFIXES | {".png", ".jpg", ".jpeg"}  # plain images too (`prepare`)
STAC_SUFFIXES = (".json", ".geojson")


@dataclass(frozen=True)
class Source:
    """A scene as a job knows it. `str()` is `shown`: without credentials, fit for messages."""

    path: str  # what GDAL opens: a file path, or a URL (query string kept: signed URLs need it)
    name: str  # the scene's name: records and shards go by it
    stem: str  # its output's file name, less the format's suffix
    notes: tuple[str, ...] = ()  # said to the user when the scene runs
    gsd: float | None = None  # the GSD its STAC item states, checked against the raster's

    @property
    def remote(self) -> bool:
        return is_url(self.path)

    @property
    def shown(self) -> str:
        return shown(self.path)

    def __str__(self) -> str:
        return self.shown


def file_source(path: str | Path) -> Source:
    path = Path(path)
    return Source(str(path), path.name, path.stem)


def url_source(url: str) -> Source:
    name = url_name(url)
    return Source(url, name, Path(name).stem)


def as_source(scene: str | Path | Source) -> Source:
    """A Source of a Source, a URL or a file path."""
    if isinstance(scene, Source):
        return scene
    return url_source(scene) if is_url(scene) else file_source(scene)


def _is_stac(item: str) -> bool:
    tail = url_name(item) if is_url(item) else item
    return tail.lower().endswith(STAC_SUFFIXES)


def expand_scenes(
    items: list[str], stac_asset: str | None = None, suffixes: set[str] = RASTER_SUFFIXES
) -> tuple[list[Source], list[str]]:
    """Files, directories (their files of `suffixes`), glob patterns, URLs and STAC documents ->
    the scenes, and the problems (one line each) of items that name none. `stac_asset` picks the
    asset of STAC items (runtime/stac.py's default when None)."""
    scenes: list[Source] = []
    problems: list[str] = []
    for item in items:
        if _is_stac(item):
            from scalemae_det.runtime.stac import stac_sources

            found, trouble = stac_sources(item, stac_asset)
            problems.extend(trouble)
            scenes.extend(found)
            continue
        if is_url(item):
            problem = url_problem(item)
            if problem:
                problems.append(f"{shown(item)}: {problem}")
            elif glob.has_magic(url_name(item)):
                problems.append(f"{shown(item)}: patterns are for local files; list the URLs")
            else:
                scenes.append(url_source(item))
            continue
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
        scenes.extend(file_source(p) for p in found)
    return list(dict.fromkeys(scenes)), problems
