"""Tiles of the user's own scenes for int8 calibration and for the accuracy gate, read as predict
reads them.

The ranges int8 quantization fixes are only as good as the tiles they are measured on, so the tiles
come from the scenes the model will run on and go through the runtime's own reader
(`runtime.scene.open_scene` + `batches`): the same band choice, value stretch, resampling to the
export's GSD and tile size, and nodata fill. Tiles are drawn from all scenes in a seeded random
order (not the first rows of the first scene, which are often collar or sea), and tiles that are
mostly nodata are left out: their FILL pixels would pull the measured ranges toward a value no real
pixel has. The first `count` tiles calibrate; the next `held_out` are kept apart for the gate, so
the gate judges the quantized model on tiles it was not calibrated on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from scalemae_det.base.errors import ParameterError
from scalemae_det.base.metadata import ModelMetadata
from scalemae_det.runtime.inputs import expand_scenes
from scalemae_det.runtime.scene import batches, open_scene

MAX_NODATA = 0.5  # a tile with more nodata (or edge padding) than this is left out
READ_CHUNK = 16  # tiles read per pass over one scene


@dataclass
class CalibrationTiles:
    calibration: np.ndarray  # (n, 3, T, T) float32 in [0, 1]
    held_out: np.ndarray  # (m, 3, T, T), disjoint from `calibration`
    scenes: list[str]
    candidates: int  # tiles the scenes offered before nodata was left out
    skipped_nodata: int


def held_out_count(count: int, batch: int) -> int:
    """Tiles the gate gets for `count` calibration tiles: a quarter of them, at least one batch,
    whole batches."""
    return -(-max(batch, count // 4) // batch) * batch


def calibration_scenes(sources: Sequence[str | os.PathLike]) -> list:
    """The rasters `sources` name (files, directories, globs, URLs, STAC items: runtime.inputs'
    Sources); ParameterError naming the first that gives none."""
    paths, problems = expand_scenes([str(s) for s in sources])
    if problems:
        raise ParameterError("calibration", f"`calibration` {problems[0]}")
    return paths


def read_tiles(
    sources: Sequence[str | os.PathLike],
    meta: ModelMetadata,
    count: int,
    held_out: int,
    seed: int = 0,
) -> CalibrationTiles:
    """`count` calibration and `held_out` gate tiles from `sources` (files, directories of rasters,
    globs, URLs, STAC items), at `meta`'s GSD and tile size; `scenes` names them as messages do (a
    URL without its credentials). Raises ParameterError when the sources cannot give
    both."""
    paths = calibration_scenes(sources)
    scenes = [open_scene(p, meta, overlap=0.0) for p in paths]
    candidates = [(i, t) for i, scene in enumerate(scenes) for t in range(len(scene.tiles))]
    order = np.random.default_rng(seed).permutation(len(candidates))
    wanted = count + held_out
    found: list[np.ndarray] = []
    skipped = 0
    for start in range(0, len(order), READ_CHUNK):
        if len(found) >= wanted:
            break
        chunk = [candidates[k] for k in order[start : start + READ_CHUNK]]
        for i, scene in enumerate(scenes):
            picked = [scene.tiles[t] for s, t in chunk if s == i]
            if not picked:
                continue
            for batch in batches(replace(scene, tiles=picked), READ_CHUNK, meta.tile):
                skipped += batch.skipped
                if not batch.tiles:  # only all-nodata tiles since the last batch
                    continue
                share = batch.nodata.reshape(len(batch.tiles), -1).mean(axis=1)
                skipped += int((share > MAX_NODATA).sum())
                found.extend(batch.images[share <= MAX_NODATA])
    if len(found) < wanted:
        raise ParameterError(
            "calibration",
            f"{', '.join(str(p) for p in paths)} give {len(found)} tiles of "
            f"{meta.tile} px at {meta.gsd:g} m with data ({skipped} of {len(candidates)} mostly "
            f"nodata); {count} to calibrate and {held_out} to check the result are needed: add "
            "scenes to `calibration` or lower `calibration_tiles`",
        )
    tiles = np.stack(found[:wanted])
    return CalibrationTiles(
        tiles[:count], tiles[count:], [str(p) for p in paths], len(candidates), skipped
    )


def in_batches(tiles: np.ndarray, batch: int) -> list[np.ndarray]:
    """Whole batches of `tiles` for a fixed-batch graph, the last one padded by repeating its last
    tile."""
    out = []
    for start in range(0, len(tiles), batch):
        part = tiles[start : start + batch]
        if len(part) < batch:
            part = np.concatenate([part, np.repeat(part[-1:], batch - len(part), axis=0)])
        out.append(np.ascontiguousarray(part))
    return out
