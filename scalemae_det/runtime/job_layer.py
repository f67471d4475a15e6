"""The job-wide layer (the `merge` command): every scene of a job in one GIS layer, an object seen
by two overlapping scenes kept once.

The scenes' seams are handled like the tiles' (runtime/seams.py, reused as it is): scene k plays the
part of tile k, a box within TRUNCATION_MARGIN pixels of its scene's edge is "truncated" (the
runtime's rule for an inner tile edge, Tile.truncated, on a tile the size of the scene), and
join_seams() compares only boxes of different scenes, so each scene's own result is left as predict
made it.

Where: boxes are compared in one metric CRS for the whole job, so that both scenes of a pair decide
about it with the same numbers: the scenes' own CRS when they all share one projected in metres
(no reprojection at all, the usual case of a tiling of one UTM zone), else the UTM zone of the
job's centre (the mean of the scenes' centres in lon/lat; a job across the antimeridian is not
handled). A box is its pixel box's outline taken to that CRS, as its axis-aligned bounds.

Memory: an index of the scenes' footprints (their bounds in the metric CRS) and, at any time, one
scene's detections plus those of its overlapping neighbours that fall inside it. Scene by scene:
read its detections and, from each scene whose footprint meets its own, the detections inside its
footprint; merge them all; keep this scene's survivors and append them to the layer. A survivor's
fate is decided with every box that can pair with it, so the result is what one merge over the
whole job would give, short of a suppression chain (a suppresses b suppresses c) reaching beyond a
scene's footprint.

The detections are read back from each scene's output in its own pixel grid (every format carries
the pixel box: GeoJSON's `pixel_bbox`, COCO's `bbox`, the CSV's and GeoPackage's x1..y2), and
placed through the footprint that the run record kept (CRS, transform, size): no raster is opened,
so a job can be merged where its outputs are, not its imagery.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from scalemae_det.base import checks
from scalemae_det.base.atomic import atomic_path
from scalemae_det.base.errors import InputError, MissingPathError, ParameterError
from scalemae_det.runtime.outputs import output_crs, read_detections
from scalemae_det.runtime.qgis_style import write_style
from scalemae_det.runtime.records import JobState, job_state
from scalemae_det.runtime.seams import METRICS, join_seams
from scalemae_det.runtime.tiling import TRUNCATION_MARGIN, Tile
from scalemae_det.runtime.vector import (
    columns,
    driver_for,
    pixel_box_rings,
    pyogrio,
    write_layer,
)

EDGE_POINTS = 9  # points per footprint edge taken to the metric CRS (edges bend under reprojection)


@dataclass
class Footprint:
    name: str
    output: Path
    crs: str
    transform: Affine
    width: int
    height: int
    class_names: list[str]
    bounds: np.ndarray = field(default_factory=lambda: np.zeros(4))  # in the metric CRS


@dataclass
class MergeReport:
    scenes: int = 0
    overlapping_pairs: int = 0  # pairs of scenes whose footprints meet
    detections: int = 0  # read, over all scenes
    kept: int = 0
    metric_crs: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def removed(self) -> int:
        return self.detections - self.kept


def _footprints(out: Path, state: JobState) -> list[Footprint]:
    found, problems = [], []
    for name in sorted(state.done):
        if name not in state.latest_ok:
            problems.append(
                f"{name}: its output was made before run records (no footprint); predict that "
                "scene again, overwriting it"
            )
            continue
        rec, start = state.latest_ok[name]
        fp = rec.get("footprint")
        if not fp:
            problems.append(f"{name}: no georeference, so it has no place in a map layer")
            continue
        found.append(
            Footprint(
                name,
                out / rec["output"],
                fp["crs"],
                Affine(*fp["transform"]),
                int(fp["width"]),
                int(fp["height"]),
                list(start.get("class_names", [])),
            )
        )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(problems[0] + more)
    if not found:
        raise InputError("no scene of the job is done yet: nothing to merge")
    return found


def metric_crs(scenes: list[Footprint]):
    """The job's common projected CRS in metres, else the UTM zone of its centre (see the
    docstring)."""
    from rasterio.crs import CRS
    from rasterio.warp import transform as warp_transform

    crss = {s.crs for s in scenes}
    if len(crss) == 1:
        only = CRS.from_user_input(next(iter(crss)))
        if only.is_projected and only.linear_units in ("metre", "meter"):
            return only
    lons, lats = [], []
    for s in scenes:
        x, y = s.transform @ (s.width / 2, s.height / 2)
        (lon,), (lat,) = warp_transform(s.crs, "EPSG:4326", [x], [y])
        lons.append(lon)
        lats.append(lat)
    zone = int((np.mean(lons) + 180) // 6) % 60 + 1
    return CRS.from_epsg(32600 + zone if np.mean(lats) >= 0 else 32700 + zone)


def _edge_boxes(s: Footprint) -> np.ndarray:
    """Thin pixel boxes along the scene's outline, so its bounds follow edges that bend when
    reprojected."""
    t = np.linspace(0, 1, EDGE_POINTS)
    xs = np.concatenate([t * s.width, np.full_like(t, s.width), t * s.width, np.zeros_like(t)])
    ys = np.concatenate([np.zeros_like(t), t * s.height, np.full_like(t, s.height), t * s.height])
    return np.stack([xs, ys, xs, ys], 1)


def _metric_bounds(s: Footprint, boxes: np.ndarray, metric) -> np.ndarray:
    rings = pixel_box_rings(boxes, s.transform, s.crs, metric)
    return np.concatenate([rings.min(1), rings.max(1)], 1)


def _meets(bounds: np.ndarray, box: np.ndarray) -> np.ndarray:
    return (
        (bounds[:, 0] < box[2])
        & (bounds[:, 2] > box[0])
        & (bounds[:, 1] < box[3])
        & (bounds[:, 3] > box[1])
    )


def merge_job(
    job_dir: str | os.PathLike,
    out: str | os.PathLike,
    crs: str = "wgs84",
    match: str = "ios",
    threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> MergeReport:
    """Every done scene of the predict job in `job_dir` into one layer `out` (.gpkg or .fgb) in
    `crs` (output_crs's vocabulary: wgs84, native when the scenes share one CRS, or any CRS),
    duplicates across scenes removed; a GeoPackage also gets the QGIS style of its layer
    (runtime/qgis_style.py) for the classes of all scenes."""
    driver = driver_for(out, "out")
    pyogrio()  # installed, or one error line before any work
    checks.choice("match", match, METRICS)
    crs_mode = output_crs(crs)
    out = checks.output_file(out, "out")
    state = job_state(job_dir)
    scenes = _footprints(Path(job_dir), state)
    report = MergeReport(len(scenes))
    if state.failed or state.left:
        report.notes.append(
            f"{len(state.failed)} scenes failed and {state.left} are left: the layer holds the "
            f"{len(scenes)} done (scalemae-det status {job_dir})"
        )
    target_crs = _layer_crs(crs_mode, scenes)
    metric = metric_crs(scenes)
    report.metric_crs = metric.to_string()
    for s in scenes:
        rings = _metric_bounds(s, _edge_boxes(s), metric)
        s.bounds = np.concatenate([rings[:, :2].min(0), rings[:, 2:].max(0)])
    index = np.stack([s.bounds for s in scenes])
    names = [s.class_names for s in scenes]
    try:
        with atomic_path(out, keep_suffix=True) as tmp:
            for k, s in enumerate(scenes):
                neighbours = [int(j) for j in np.flatnonzero(_meets(index, s.bounds)) if j != k]
                report.overlapping_pairs += sum(int(j > k) for j in neighbours)
                found = _read_back(s.output)
                boxes, scores, labels = found.boxes, found.scores, found.class_ids
                keep = _dedup(
                    k, s, boxes, scores, labels, scenes, neighbours, metric, match, threshold
                )
                report.detections += len(scores)
                report.kept += len(keep)
                rings = pixel_box_rings(boxes[keep], s.transform, s.crs, target_crs)
                write_layer(
                    tmp,
                    rings,
                    columns(s.name, boxes[keep], scores[keep], labels[keep], names[k]),
                    target_crs.to_string(),
                    driver,
                    append=k > 0,
                )
                if progress:
                    progress(k + 1, len(scenes))
            if driver == "GPKG":
                write_style(tmp, list(dict.fromkeys(n for names_k in names for n in names_k)))
    except OSError as exc:
        raise checks.write_failed(out, exc) from None
    return report


def _layer_crs(crs_mode, scenes: list[Footprint]):
    """The layer's CRS for output_crs's `crs_mode`: native is the scenes' one CRS, if they share
    it."""
    from rasterio.crs import CRS

    if crs_mode == "wgs84":
        return CRS.from_epsg(4326)
    if crs_mode != "native":
        return crs_mode
    found = {CRS.from_user_input(s.crs).to_string() for s in scenes}
    if len(found) > 1:
        raise ParameterError(
            "crs",
            f"native: the scenes are in {len(found)} CRSs ({', '.join(sorted(found)[:3])}); "
            "name one, e.g. EPSG:4326",
            value="native",
        )
    return CRS.from_user_input(scenes[0].crs) if scenes else CRS.from_epsg(4326)


def _read_back(path: Path):
    try:
        return read_detections(path)
    except FileNotFoundError:
        raise MissingPathError(
            f"{path}: the output its run record names is gone; predict that scene again"
        ) from None


def _dedup(
    k: int,
    s: Footprint,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    scenes: list[Footprint],
    neighbours: list[int],
    metric,
    match: str,
    threshold: float,
) -> np.ndarray:
    """Indices of scene k's detections that survive join_seams() against its neighbours' inside its
    footprint.

    The scenes enter join_seams() in job order, whichever is scene k, so that merge's tie-break
    (equal scores: the earlier entry wins; a pair cut from one image scores the same) falls the same
    way when the neighbour decides about the same pair.
    """
    if not neighbours or not len(scores):
        return np.arange(len(scores))
    parts, first = [], 0
    for j in sorted([k, *neighbours]):
        scene = scenes[j]
        if j == k:
            b, sc, lab = boxes, scores, labels
        else:
            found = _read_back(scene.output)
            b, sc, lab = found.boxes, found.scores, found.class_ids
        mb = _metric_bounds(scene, b, metric)
        inside = np.ones(len(sc), bool) if j == k else _meets(mb, s.bounds)
        if j < k:
            first += int(inside.sum())
        whole = Tile(
            j, 0, 0, scene.width, scene.height, scene.width, scene.height, (True, True, True, True)
        )
        parts.append(
            (
                mb[inside],
                sc[inside],
                lab[inside],
                np.full(int(inside.sum()), j),
                whole.truncated(b[inside], TRUNCATION_MARGIN),
            )
        )
    mb, sc, lab, tiles, trunc = (np.concatenate(p) for p in zip(*parts))
    mb = mb - np.tile(
        mb[:, :2].min(0), 2
    )  # merge's sweep wants coordinates from 0 (and keeps precision)
    kept = join_seams(mb, sc, lab, tiles, trunc, match, threshold)
    mine = kept[(kept >= first) & (kept < first + len(scores))]
    return mine - first
