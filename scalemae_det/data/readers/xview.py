"""xView's labels (`scalemae-det prepare-xview`): its GeoJSON read into boxes per scene for the
generic chipper (scalemae_det.data.chipping), which writes the chips and COCO files.

The GeoJSON (~1M features) is streamed: only five numbers per box are kept, grouped by scene,
then the chipper cuts scenes one at a time. Category ids in the JSON are 1..K in xView type-id
order; each category keeps its `xview_type_id`. Labelled scenes missing from the images folder
are skipped and reported (the real xView labels scenes it does not ship).
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from scalemae_det.base import checks
from scalemae_det.base.errors import InputError
from scalemae_det.data.chipping import (
    DEFAULT_SEED,
    ChipConfig,
    SceneBoxes,
    check_options,
    chip_dataset,
    natural_key,
    report_chipping,
)

log = logging.getLogger(__name__)

# The 60 xView classes by type id (the dataset's class list; ids are sparse in 11..94).
XVIEW_CLASSES: dict[int, str] = {
    11: "Fixed-wing Aircraft",
    12: "Small Aircraft",
    13: "Cargo Plane",
    15: "Helicopter",
    17: "Passenger Vehicle",
    18: "Small Car",
    19: "Bus",
    20: "Pickup Truck",
    21: "Utility Truck",
    23: "Truck",
    24: "Cargo Truck",
    25: "Truck w/Box",
    26: "Truck Tractor",
    27: "Trailer",
    28: "Truck w/Flatbed",
    29: "Truck w/Liquid",
    32: "Crane Truck",
    33: "Railway Vehicle",
    34: "Passenger Car",
    35: "Cargo Car",
    36: "Flat Car",
    37: "Tank car",
    38: "Locomotive",
    40: "Maritime Vessel",
    41: "Motorboat",
    42: "Sailboat",
    44: "Tugboat",
    45: "Barge",
    47: "Fishing Vessel",
    49: "Ferry",
    50: "Yacht",
    51: "Container Ship",
    52: "Oil Tanker",
    53: "Engineering Vehicle",
    54: "Tower crane",
    55: "Container Crane",
    56: "Reach Stacker",
    57: "Straddle Carrier",
    59: "Mobile Crane",
    60: "Dump Truck",
    61: "Haul Truck",
    62: "Scraper/Tractor",
    63: "Front loader/Bulldozer",
    64: "Excavator",
    65: "Cement Mixer",
    66: "Ground Grader",
    71: "Hut/Tent",
    72: "Shed",
    73: "Building",
    74: "Aircraft Hangar",
    76: "Damaged Building",
    77: "Facility",
    79: "Construction Site",
    83: "Vehicle Lot",
    84: "Helipad",
    86: "Storage Tank",
    89: "Shipping container lot",
    91: "Shipping Container",
    93: "Pylon",
    94: "Tower",
}
DEFAULT_DROP = (75, 82)  # type ids in the labels with almost no boxes and no class of their own
DEFAULT_VAL_FRACTION = 0.25


# --- reading the labels --------------------------------------------------------------------

_FEATURES_START = re.compile(r'"features"\s*:\s*\[')
_SEPARATORS = re.compile(r"[\s,]*")


def iter_features(
    path: Path, on_bytes: Callable[[int], None] = lambda n: None, chunk_size: int = 1 << 20
) -> Iterator[dict]:
    """Yield the features of a GeoJSON FeatureCollection one by one, reading it in chunks."""
    decoder, text = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as fh:

        def more() -> str:
            raw = fh.read(chunk_size)
            on_bytes(len(raw))
            return text.decode(raw, final=not raw) if raw else ""

        buf = ""
        while (start := _FEATURES_START.search(buf)) is None:
            chunk = more()
            if not chunk:
                raise InputError(f"{path}: not a GeoJSON FeatureCollection (no 'features' array)")
            buf = buf[-64:] + chunk  # the tail may hold the start of the key
        buf, pos = buf[start.end() :], 0
        while True:
            pos = _SEPARATORS.match(buf, pos).end()
            if pos < len(buf) and buf[pos] == "]":
                return
            try:
                feature, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:  # a feature cut by the chunk boundary, or bad JSON
                chunk = more()
                if not chunk:
                    raise InputError(
                        f"{path}: invalid GeoJSON near character {pos} of the features array"
                    ) from None
                buf, pos = buf[pos:] + chunk, 0
                continue
            yield feature
            pos = end
            if pos > chunk_size:
                buf, pos = buf[pos:], 0


def read_labels(
    path: Path, on_bytes: Callable[[int], None] = lambda n: None
) -> tuple[dict[str, np.ndarray], int]:
    """Boxes per scene as (N, 5) float arrays of type_id, xmin, ymin, xmax, ymax; and the
    number of features without a usable image id (a bare file name), type id or box."""
    per_scene: dict[str, array] = defaultdict(lambda: array("d"))
    bad = 0
    for feature in iter_features(path, on_bytes):
        try:
            props = feature["properties"]
            image_id, type_id = str(props["image_id"]), int(props["type_id"])
            x0, y0, x1, y1 = (float(v) for v in str(props["bounds_imcoords"]).split(","))
        except (KeyError, TypeError, ValueError):
            bad += 1
            continue
        if not (x1 > x0 and y1 > y0) or Path(image_id).name != image_id:
            bad += 1
            continue
        per_scene[image_id].extend((type_id, x0, y0, x1, y1))
    return {k: np.frombuffer(v, dtype=np.float64).reshape(-1, 5) for k, v in per_scene.items()}, bad


# --- the conversion -------------------------------------------------------------------------


def categories(drop: Iterable[int]) -> list[dict]:
    """COCO categories 1..K for the xView classes not dropped, in type-id order."""
    kept = [t for t in XVIEW_CLASSES if t not in set(drop)]
    return [{"id": k, "name": XVIEW_CLASSES[t], "xview_type_id": t} for k, t in enumerate(kept, 1)]


def check_inputs(
    geojson: Path, images: Path, out: Path, cfg: ChipConfig, val_fraction: float
) -> None:
    """Check the label file, the images folder, the options and the output folder before any
    work."""
    if not geojson.is_file():
        raise InputError(f"{geojson}: no such file")
    if not images.is_dir():
        raise InputError(f"{images}: images directory not found")
    check_options(cfg, val_fraction)
    checks.output_dir(out, "out")


def prepare_xview(
    geojson: Path,
    images: Path,
    out: Path,
    *,
    cfg: ChipConfig = ChipConfig(),
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    drop_classes: Iterable[int] = DEFAULT_DROP,
    progress: bool = True,
    skip_unreadable: bool = False,
) -> dict:
    """Convert xView to chips + COCO JSON under `out` (`chipping.chip_dataset`, staged publishing
    included); returns counts for the summary. An unreadable scene stops the run, naming GDAL's
    cause, unless `skip_unreadable`, which leaves it out and counts it."""
    geojson, images, out = Path(geojson), Path(images), Path(out)
    check_inputs(geojson, images, out, cfg, val_fraction)
    drop = set(drop_classes)
    cats = categories(drop)
    per_scene, bad = _read_labels_shown(geojson, progress)
    missing, present = _scenes_on_disk(per_scene, images)
    label_of = {c["xview_type_id"]: c["id"] for c in cats}
    scenes = [_scene_boxes(images / s, per_scene[s], label_of) for s in present]
    counts = chip_dataset(
        scenes,
        cats,
        out,
        cfg=cfg,
        val_fraction=val_fraction,
        seed=seed,
        skip_unreadable=skip_unreadable,
        progress=progress,
        work_name="prepare-xview",
    )
    counts.update(_label_counts(per_scene, label_of, drop, missing, bad))
    _report(counts, images)
    return counts


def _read_labels_shown(geojson: Path, progress: bool) -> tuple[dict[str, np.ndarray], int]:
    """`read_labels`, with a progress bar over the file's bytes when `progress`."""
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("reading labels", total=geojson.stat().st_size)
        return read_labels(geojson, lambda n: bar.advance(task, n))


def _scenes_on_disk(per_scene: dict[str, np.ndarray], images: Path) -> tuple[list[str], list[str]]:
    """The labelled scenes missing from `images` (in natural order) and those present; an error
    when none is present."""
    missing = sorted((s for s in per_scene if not (images / s).is_file()), key=natural_key)
    present = sorted(set(per_scene) - set(missing))
    if not present:
        raise InputError(f"{images}: none of the {len(per_scene)} labelled scenes is there")
    return missing, present


def _scene_boxes(path: Path, rows: np.ndarray, label_of: dict[int, int]) -> SceneBoxes:
    """A scene's boxes (xyxy) of the classes kept, with their category ids."""
    type_ids = rows[:, 0].astype(int)
    known = np.isin(type_ids, list(label_of))
    labels = np.array([label_of[t] for t in type_ids[known].tolist()], int)
    return SceneBoxes(path, rows[known, 1:], labels)


def _label_counts(
    per_scene: dict[str, np.ndarray],
    label_of: dict[int, int],
    drop: set[int],
    missing: list[str],
    bad: int,
) -> dict:
    """What the labels leave out: missing scenes, unusable features, boxes of dropped or unknown
    classes."""
    type_counts = Counter()
    for boxes in per_scene.values():
        type_counts.update(boxes[:, 0].astype(int).tolist())
    unknown = {t: n for t, n in type_counts.items() if t not in label_of and t not in drop}
    return {
        "missing_scenes": missing,
        "bad_features": bad,
        "dropped_boxes": sum(type_counts[t] for t in drop),
        "unknown_type_ids": unknown,
    }


def _report(counts: dict, images: Path) -> None:
    """Log one warning line for each kind of input the run left out."""
    missing = counts["missing_scenes"]
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        log.warning(f"warning: {len(missing)} labelled scene(s) not in {images}, skipped: {shown}")
    if counts["unknown_type_ids"]:
        ids = ", ".join(f"{t} ({n} boxes)" for t, n in sorted(counts["unknown_type_ids"].items()))
        log.warning(f"warning: boxes of type ids outside the xView classes skipped: {ids}")
    report_chipping(counts, log, "scene")
    if counts["bad_features"]:
        log.warning(
            f"warning: {counts['bad_features']} feature(s) without a usable image_id, "
            "type_id or bounds_imcoords skipped"
        )
