"""STAC Items and ItemCollections as scenes (https://github.com/radiantearth/stac-spec), read with
pystac.

A document (a file, or an http(s) URL fetched with the standard library under a timeout) that is an
Item gives one scene, an ItemCollection (a FeatureCollection of Items, what STAC API searches
return) one per item. Each item's scene is one of its assets:
1. the asset named `asset` when given, and an item without it is a problem naming what it has;
2. else `visual` (the true-colour asset of Sentinel-2, Landsat and Maxar items on Earth Search and
   Planetary Computer), else the first GeoTIFF asset with the `data` role (or no roles), said in a
   note, else a problem.
The item id names the scene's output (OUT/<id>.<format>); a relative asset href is resolved against
the document's location; the item's (or the asset's) `gsd` is kept for the reader to check against
the raster's own (runtime/scene.py).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

from scalemae_det.base.remote import is_url, shown, url_name
from scalemae_det.runtime.inputs import Source

DEFAULT_ASSET = "visual"
GEOTIFF = "image/tiff"  # the media type's start: image/tiff; application=geotiff[; profile=...]
FETCH_TIMEOUT_S = 30.0  # GDAL_HTTP_TIMEOUT, when set, is used instead


def _fetch(location: str) -> dict:
    """The JSON document at a file path or an http(s) URL."""
    if is_url(location):
        if urlsplit(location).scheme.lower() not in ("http", "https"):
            raise ValueError("a STAC document is read over http(s) or from a file")
        timeout = float(os.environ.get("GDAL_HTTP_TIMEOUT") or FETCH_TIMEOUT_S)
        try:
            with urllib.request.urlopen(location, timeout=timeout) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise ValueError(f"HTTP {exc.code} ({exc.reason})") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ValueError(f"cannot fetch it ({reason})") from None
    try:
        return json.loads(Path(location).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror})") from None


def _resolve(href: str, location: str) -> str:
    """An asset href made absolute against the document's location (a URL or a file path)."""
    if is_url(href) or Path(href).is_absolute():
        return href
    if is_url(location):
        return urljoin(location, href)
    return str(Path(location).parent / href)


def _is_geotiff(asset) -> bool:
    return (asset.media_type or "").lower().startswith(GEOTIFF)


def pick_asset(item, asset: str | None) -> tuple[str, str | None]:
    """The key of the asset to read and a note when the default was not there (see rule 2);
    ValueError saying what the item has when none fits."""
    keys = list(item.assets)
    if asset is not None:
        if asset not in item.assets:
            raise ValueError(f"no asset {asset!r} (it has: {', '.join(keys) or 'none'})")
        return asset, None
    if DEFAULT_ASSET in item.assets:
        return DEFAULT_ASSET, None
    for key, value in item.assets.items():
        roles = value.roles
        if _is_geotiff(value) and (not roles or "data" in roles):
            return key, (
                f"no {DEFAULT_ASSET!r} asset: reading {key!r}, its first GeoTIFF data asset "
                "(`stac_asset` picks another)"
            )
    raise ValueError(
        f"no {DEFAULT_ASSET!r} asset and no GeoTIFF data asset (it has: {', '.join(keys)})"
    )


def _source(item, asset: str | None, location: str) -> Source:
    key, note = pick_asset(item, asset)
    chosen = item.assets[key]
    href = _resolve(chosen.href, location)
    tail = url_name(href) if is_url(href) else Path(href).name
    suffix = PurePosixPath(tail).suffix
    gsd = chosen.extra_fields.get("gsd", item.properties.get("gsd"))
    if not is_url(href) and not Path(href).is_file():
        raise ValueError(f"asset {key!r}: {href}: no such file")
    return Source(
        href,
        f"{item.id}{suffix}",
        item.id,
        (note,) if note else (),
        float(gsd) if isinstance(gsd, int | float) and gsd > 0 else None,
    )


def stac_sources(location: str, asset: str | None = None) -> tuple[list[Source], list[str]]:
    """The scenes of a STAC Item or ItemCollection at `location`, and the problems, one line each
    (the document unreadable or not STAC; an item without a usable asset, the others kept)."""
    import pystac

    where = shown(location)
    try:
        document = _fetch(location)
    except (ValueError, json.JSONDecodeError) as exc:
        return [], [f"{where}: not a readable STAC document: {exc}"]
    kind = document.get("type") if isinstance(document, dict) else None
    try:
        if kind == "Feature":
            items = [pystac.Item.from_dict(document, preserve_dict=False)]
        elif kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(document, preserve_dict=False))
        else:
            return [], [f"{where}: not a STAC Item or ItemCollection (type {kind!r})"]
    except (pystac.STACError, KeyError, TypeError, ValueError) as exc:
        return [], [f"{where}: not a valid STAC document ({type(exc).__name__}: {exc})"]
    found, problems = [], []
    for item in items:
        try:
            found.append(_source(item, asset, location))
        except ValueError as exc:
            problems.append(f"{where}: item {item.id}: {exc}")
    if not items:
        problems.append(f"{where}: an ItemCollection with no items")
    return found, problems
