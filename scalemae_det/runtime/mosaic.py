"""`merge`: every scene of a job in one GIS layer, an object seen by two overlapping scenes kept once.

The scenes' seams are handled like the tiles' (runtime/merge.py, reused as it is): scene k plays the
part of tile k, a box within TRUNCATION_MARGIN pixels of its scene's edge is "truncated" (the
runtime's rule for an inner tile edge, Tile.truncated, on a tile the size of the scene), and merge()
compares only boxes of different scenes, so each scene's own result is left as predict made it.

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

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from scalemae_det.base import checks
from scalemae_det.base.atomic import atomic_path
from scalemae_det.base.errors import InputError
from scalemae_det.runtime.merge import METRICS, merge
from scalemae_det.runtime.records import JobState, job_state
from scalemae_det.runtime.tiling import TRUNCATION_MARGIN, Tile
from scalemae_det.runtime.vector import (
    columns,
    driver_for,
    pixel_box_rings,
    pyogrio,
    read_columns,
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


def check_crs(text: str, what: str = "--crs"):
    """A CRS the user named (EPSG:4326, a WKT, a PROJ string) as rasterio's CRS, or one error line."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        with rasterio.Env():  # GDAL reports through the exception, not on stderr
            return CRS.from_user_input(text)
    except CRSError as exc:
        raise InputError(f"{what} {text}: not a CRS ({exc})") from None


def _footprints(out: Path, state: JobState) -> list[Footprint]:
    found, problems = [], []
    for name in sorted(state.done):
        if name not in state.latest_ok:
            problems.append(
                f"{name}: its output was made before run records (no footprint); redo it with --overwrite"
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
    """The job's common projected CRS in metres, else the UTM zone of its centre (see the docstring)."""
    from rasterio.warp import transform as warp_transform

    crss = {s.crs for s in scenes}
    if len(crss) == 1:
        only = check_crs(next(iter(crss)), "scene CRS")
        if only.is_projected and only.linear_units in ("metre", "meter"):
            return only
    lons, lats = [], []
    for s in scenes:
        x, y = s.transform @ (s.width / 2, s.height / 2)
        (lon,), (lat,) = warp_transform(s.crs, "EPSG:4326", [x], [y])
        lons.append(lon)
        lats.append(lat)
    zone = int((np.mean(lons) + 180) // 6) % 60 + 1
    return check_crs(f"EPSG:{32600 + zone if np.mean(lats) >= 0 else 32700 + zone}")


def _edge_boxes(s: Footprint) -> np.ndarray:
    """Thin pixel boxes along the scene's outline, so its bounds follow edges that bend when reprojected."""
    t = np.linspace(0, 1, EDGE_POINTS)
    xs = np.concatenate([t * s.width, np.full_like(t, s.width), t * s.width, np.zeros_like(t)])
    ys = np.concatenate([np.zeros_like(t), t * s.height, np.full_like(t, s.height), t * s.height])
    return np.stack([xs, ys, xs, ys], 1)


def read_detections(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes xyxy scene pixels, scores, class ids) from one scene's output, whatever its format."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".gpkg":
            *box, scores, labels = read_columns(
                path, ["px_x1", "px_y1", "px_x2", "px_y2", "score", "class_id"]
            )
            boxes = np.stack(box, 1) if len(scores) else np.zeros((0, 4))
        elif suffix == ".csv":
            with open(path, newline="") as fh:
                rows = [
                    (r["x1"], r["y1"], r["x2"], r["y2"], r["score"], r["class_id"])
                    for r in csv.DictReader(fh)
                ]
            table = np.asarray(rows, np.float64).reshape(-1, 6)
            boxes, scores, labels = table[:, :4], table[:, 4], table[:, 5]
        elif suffix == ".geojson":
            props = [f["properties"] for f in json.loads(path.read_text())["features"]]
            boxes = np.asarray([p["pixel_bbox"] for p in props], np.float64).reshape(-1, 4)
            scores, labels = [p["score"] for p in props], [p["class_id"] for p in props]
        elif suffix == ".json":  # COCO results: bbox is x, y, w, h
            entries = json.loads(path.read_text())
            boxes = np.asarray([e["bbox"] for e in entries], np.float64).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            scores, labels = [e["score"] for e in entries], [e["category_id"] for e in entries]
        else:
            raise InputError(f"{path}: not an output of predict (.geojson, .json, .csv, .gpkg)")
    except FileNotFoundError:
        raise InputError(
            f"{path}: the output its run record names is gone; redo the scene with --overwrite"
        ) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"{path}: not the output predict wrote ({type(exc).__name__}: {exc})"
        ) from None
    return (
        np.asarray(boxes, np.float64),
        np.asarray(scores, np.float64),
        np.asarray(labels, np.int64),
    )


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
    out: str | os.PathLike,
    to: str | os.PathLike,
    crs: str = "EPSG:4326",
    match: str = "ios",
    threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> MergeReport:
    """Every done scene of the job in OUT into one layer `to` (.gpkg or .fgb) in `crs`, duplicates removed."""
    driver = driver_for(to, "--to")
    pyogrio()  # installed, or one error line before any work
    checks.choice("match", match, METRICS)
    target_crs = check_crs(crs)
    to = Path(to)
    folder = to.parent.resolve()
    problem = (
        "is a directory"
        if to.is_dir()
        else "its folder does not exist"
        if not folder.is_dir()
        else "its folder is not writable"
        if not os.access(folder, os.W_OK)
        else None
    )
    if problem:
        raise InputError(f"--to {to}: {problem}")
    state = job_state(out)
    scenes = _footprints(Path(out), state)
    report = MergeReport(len(scenes))
    if state.failed or state.left:
        report.notes.append(
            f"{len(state.failed)} scenes failed and {state.left} are left: the layer holds the "
            f"{len(scenes)} done (scalemae-det status {out})"
        )
    metric = metric_crs(scenes)
    report.metric_crs = metric.to_string()
    for s in scenes:
        rings = _metric_bounds(s, _edge_boxes(s), metric)
        s.bounds = np.concatenate([rings[:, :2].min(0), rings[:, 2:].max(0)])
    index = np.stack([s.bounds for s in scenes])
    names = [s.class_names for s in scenes]
    try:
        with atomic_path(to, keep_suffix=True) as tmp:
            for k, s in enumerate(scenes):
                neighbours = [int(j) for j in np.flatnonzero(_meets(index, s.bounds)) if j != k]
                report.overlapping_pairs += sum(int(j > k) for j in neighbours)
                boxes, scores, labels = read_detections(s.output)
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
    except OSError as exc:
        raise InputError(f"--to {to}: cannot write ({exc.strerror})") from None
    return report


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
    """Indices of scene k's detections that survive merge() against its neighbours' inside its footprint.

    The scenes enter merge() in job order, whichever is scene k, so that merge's tie-break (equal
    scores: the earlier entry wins; a pair cut from one image scores the same) falls the same way
    when the neighbour decides about the same pair.
    """
    if not neighbours or not len(scores):
        return np.arange(len(scores))
    parts, first = [], 0
    for j in sorted([k, *neighbours]):
        scene = scenes[j]
        b, sc, lab = (boxes, scores, labels) if j == k else read_detections(scene.output)
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
    kept = merge(mb, sc, lab, tiles, trunc, match, threshold)
    mine = kept[(kept >= first) & (kept < first + len(scores))]
    return mine - first
