"""xView -> georeferenced chips + COCO train/val label files (`scalemae-det prepare-xview`).

The GeoJSON (~1M features) is streamed: only five numbers per box are kept, grouped by scene,
then scenes are chipped one at a time, so memory is bounded by one scene's pixels. The split is
by scene (chips of one scene never straddle train and val), seeded, over the scenes present.

Output layout, ready for train.py's --train_image_dir/--train_label_file (and val):

    OUT/train/<scene>_<x0>_<y0>.tif   OUT/train.json   OUT/train_scenes.json
    OUT/val/<scene>_<x0>_<y0>.tif     OUT/val.json     OUT/val_scenes.json

`<split>_scenes.json` holds the same boxes per whole scene, in scene pixels (one image record per
scene, `file_name` the scene's): the ground truth of scene-level evaluation (scalemae_det.scoring).

Category ids in the JSON are 1..K in xView type-id order; each category keeps its
`xview_type_id`. Image records keep their `scene` and chip offset (`x0`, `y0`).

A box cut by a chip edge is judged per axis against what the chip can show: it is kept (clipped)
when, along x and along y, at least `min_visible` of min(box side, chip side) is inside. So a box
larger than a chip (xView's facilities, lots, ships) is kept clipped in the chips it crosses, and
a box across a chip corner is not lost to an area rule (60% of each side is 36% of the area).
What intersects a chip without passing is written as a COCO `iscrowd` region rather than dropped:
pycocotools ignores detections on it when scoring the label file, and train.py's dataset leaves it
out (torchvision's heads have no ignore regions). Scene-level evaluation has no chip edges at all.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import random
import re
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scalemae_det.base import checks
from scalemae_det.base.atomic import atomic_path, work_dir
from scalemae_det.base.errors import InputError, MissingPathError, ParameterError, UserError
from scalemae_det.base.pixels import raster_errors
from scalemae_det.data.labels import coco_annotation
from scalemae_det.runtime.tiling import offsets  # chips are laid out as predict lays out tiles

if TYPE_CHECKING:
    from rasterio.windows import Window

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
DEFAULT_VAL_FRACTION, DEFAULT_SEED = 0.25, 13


@dataclass(frozen=True)
class ChipConfig:
    chip: int = 800
    overlap: float = 0.1  # fraction of the chip shared with the next one
    min_visible: float = (
        0.5  # keep a clipped box when, per axis, this fraction of what the chip can show is in it
    )
    min_size: float = 2.0  # ... and it is at least this many pixels wide and high


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


# --- chipping ------------------------------------------------------------------------------


def clip_boxes(boxes: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Boxes (N, 4 xyxy) clipped to the window at (x0, y0), in window pixels."""
    return np.clip(boxes - [x0, y0, x0, y0], 0, [width, height, width, height])


def visible(
    boxes: np.ndarray, clipped: np.ndarray, cfg: ChipConfig, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, ignored) masks of boxes clipped to a width x height chip (see the module doc).

    Kept: per axis, the visible side is at least `min_visible` of what the chip can show of that
    side, min(side, chip side), and at least `min_size` px. Ignored: the others that intersect the chip.
    """
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    kept = (
        (w >= cfg.min_size)
        & (h >= cfg.min_size)
        & (w >= cfg.min_visible * np.minimum(bw, width))
        & (h >= cfg.min_visible * np.minimum(bh, height))
    )
    return kept, (w > 0) & (h > 0) & ~kept


def split_scenes(
    scenes: Iterable[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Seeded image-level split; at least one val scene when val_fraction > 0 and there are two."""
    ordered = sorted(scenes, key=_natural_key)
    random.Random(seed).shuffle(ordered)
    n_val = round(len(ordered) * val_fraction)
    if val_fraction > 0 and len(ordered) > 1:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    return sorted(ordered[n_val:], key=_natural_key), sorted(ordered[:n_val], key=_natural_key)


def _natural_key(name: str) -> tuple:
    """Sort key ordering digit runs by value: "2.tif" before "10.tif"."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def categories(drop: Iterable[int]) -> list[dict]:
    """COCO categories 1..K for the xView classes not dropped, in type-id order."""
    kept = [t for t in XVIEW_CLASSES if t not in set(drop)]
    return [{"id": k, "name": XVIEW_CLASSES[t], "xview_type_id": t} for k, t in enumerate(kept, 1)]


class _CocoWriter:
    """Accumulates one split's image and annotation records."""

    def __init__(self, cats: list[dict]):
        self.cats, self.images, self.annotations = cats, [], []

    def add(
        self,
        record: dict,
        boxes: np.ndarray,
        labels: np.ndarray,
        crowd: np.ndarray = np.zeros((0, 4)),
        crowd_labels: np.ndarray = np.zeros(0, int),
    ) -> None:
        """Record one image with its boxes and their category ids, and its ignore (iscrowd) regions."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, **record})
        for group, group_labels, iscrowd in ((boxes, labels, 0), (crowd, crowd_labels, 1)):
            for box, label in zip(group.tolist(), group_labels.tolist()):
                self.annotations.append(
                    coco_annotation(
                        len(self.annotations) + 1, image_id, int(label), box, iscrowd=iscrowd
                    )
                )

    def write(self, path: Path) -> None:
        """Write the split's COCO label file atomically."""
        with atomic_path(path) as tmp:
            tmp.write_text(
                json.dumps(
                    {
                        "images": self.images,
                        "annotations": self.annotations,
                        "categories": self.cats,
                    }
                )
            )


def chip_windows(width: int, height: int, cfg: ChipConfig) -> Iterator[Window]:
    """The rasterio Windows of a width x height scene's chips, row by row: laid out by the runtime's
    `offsets` (every stride, the last one flush with the far edge), each at most cfg.chip square."""
    from rasterio.windows import Window

    stride = max(1, cfg.chip - round(cfg.overlap * cfg.chip))
    for y0 in offsets(height, cfg.chip, stride):
        for x0 in offsets(width, cfg.chip, stride):
            yield Window(x0, y0, min(cfg.chip, width), min(cfg.chip, height))


def inside_scene(
    boxes: np.ndarray, labels: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Boxes clipped to a width x height scene, those left with an area and their labels; and the
    number of boxes lying wholly outside it."""
    clipped = clip_boxes(boxes, 0, 0, width, height)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped[inside], labels[inside], int((~inside).sum())


def write_chip(path: Path, data: np.ndarray, src, win) -> None:
    """Write one chip's pixels atomically as a deflate GeoTIFF with its window's georeference, keeping
    the scene's profile (less its block layout, which a smaller chip may not fit) and colour bands."""
    import rasterio

    profile = {
        k: v
        for k, v in src.profile.items()
        if k not in ("blockxsize", "blockysize", "tiled", "interleave")
    }
    profile.update(
        driver="GTiff",
        width=win.width,
        height=win.height,
        transform=src.window_transform(win),
        compress="deflate",
    )
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.colorinterp = src.colorinterp


def chip_scene(
    scene_path: Path,
    boxes: np.ndarray,
    labels: np.ndarray,
    out_dir: Path,
    writer: _CocoWriter,
    cfg: ChipConfig,
    scenes: _CocoWriter | None = None,
) -> tuple[int, int, int]:
    """Write one scene's chips as GeoTIFFs with their window's georeference and record them.

    Boxes are first clipped to the scene (those left empty are counted as outside), then to
    each chip, kept or made ignore regions by `visible`. Chips that are blank (all zero) and hold
    no box are skipped. The scene itself and its clipped boxes go to `scenes`. Returns the numbers
    of chips and kept boxes written and of boxes outside the scene.
    """
    import rasterio

    n_chips = n_boxes = 0
    with raster_errors(scene_path), rasterio.open(scene_path) as src:
        scene_boxes, scene_labels, n_outside = inside_scene(boxes, labels, src.width, src.height)
        if scenes is not None:
            scenes.add(
                {"file_name": scene_path.name, "width": src.width, "height": src.height},
                scene_boxes,
                scene_labels,
            )
        for win in chip_windows(src.width, src.height, cfg):
            clipped = clip_boxes(scene_boxes, win.col_off, win.row_off, win.width, win.height)
            keep, ignore = visible(scene_boxes, clipped, cfg, win.width, win.height)
            data = src.read(window=win)
            if not keep.any() and not ignore.any() and not data.any():
                continue  # blank, and nothing to learn or ignore there
            name = f"{scene_path.stem}_{win.col_off}_{win.row_off}.tif"
            write_chip(out_dir / name, data, src, win)
            writer.add(
                {
                    "file_name": name,
                    "width": int(win.width),
                    "height": int(win.height),
                    "scene": scene_path.name,
                    "x0": win.col_off,
                    "y0": win.row_off,
                },
                clipped[keep],
                scene_labels[keep],
                clipped[ignore],
                scene_labels[ignore],
            )
            n_chips += 1
            n_boxes += int(keep.sum())
    return n_chips, n_boxes, n_outside


# --- the whole conversion ------------------------------------------------------------------

OUTPUTS = (
    "train",
    "val",
    "train.json",
    "val.json",
    "train_scenes.json",
    "val_scenes.json",
)  # what a run writes under `out`, all replaced together


def check_options(cfg: ChipConfig, val_fraction: float) -> None:
    """Raise a ParameterError naming the first chipping option or split fraction out of its range."""
    checks.number("val_fraction", val_fraction, lo=0, hi=1, hi_open=True)
    checks.number("chip", cfg.chip, lo=1, integer=True)
    checks.number("overlap", cfg.overlap, lo=0, hi=1, hi_open=True)
    checks.number("min_visible", cfg.min_visible, lo=0, hi=1, lo_open=True)
    checks.number("min_size", cfg.min_size, lo=0)


def check_inputs(
    geojson: Path, images: Path, out: Path, cfg: ChipConfig, val_fraction: float
) -> None:
    """Check the label file, the images folder, the options and the output folder before any work."""
    if not geojson.is_file():
        raise MissingPathError(f"{geojson}: no such file")
    if not images.is_dir():
        raise MissingPathError(f"{images}: images directory not found")
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
    """Convert xView to chips + COCO JSON under `out`; returns counts for the summary.

    Everything is written into a work folder inside `out` and moved into place only when every scene
    is done, replacing the previous run's train/, val/ and label files as a whole: a failed or killed
    run leaves the previous output as it was (and its work folder is removed by the next run), and a
    rerun never keeps chips of a scene that has changed split. An unreadable scene stops the run,
    naming GDAL's cause, unless `skip_unreadable`, which leaves it out and counts it.
    """
    from rich.progress import Progress

    geojson, images, out = Path(geojson), Path(images), Path(out)
    check_inputs(geojson, images, out, cfg, val_fraction)
    drop = set(drop_classes)
    cats = categories(drop)
    per_scene, bad = _read_labels_shown(geojson, progress)
    missing, present = _scenes_on_disk(per_scene, images)
    train, val = split_scenes(present, val_fraction, seed)
    label_of = {c["xview_type_id"]: c["id"] for c in cats}
    counts = _first_counts(per_scene, label_of, drop, train, val, missing, bad)
    run = _Conversion(images, per_scene, label_of, cats, cfg, skip_unreadable, counts)
    with (
        work_dir(out / "prepare-xview") as stage,
        Progress(disable=not progress, transient=True) as bar,
    ):
        for split, scenes in (("train", train), ("val", val)):
            run.convert_split(split, scenes, stage, bar)
        _publish(stage, out)
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
    missing = sorted((s for s in per_scene if not (images / s).is_file()), key=_natural_key)
    present = sorted(set(per_scene) - set(missing))
    if not present:
        raise InputError(f"{images}: none of the {len(per_scene)} labelled scenes is there")
    return missing, present


def _first_counts(
    per_scene: dict[str, np.ndarray],
    label_of: dict[int, int],
    drop: set[int],
    train: list[str],
    val: list[str],
    missing: list[str],
    bad: int,
) -> dict:
    """The summary's counts known before chipping: scenes per split, what the labels leave out (missing
    scenes, unusable features, boxes of dropped or unknown classes); chipping fills in the rest."""
    type_counts = Counter()
    for boxes in per_scene.values():
        type_counts.update(boxes[:, 0].astype(int).tolist())
    unknown = {t: n for t, n in type_counts.items() if t not in label_of and t not in drop}
    return {
        "scenes": {"train": len(train), "val": len(val)},
        "chips": {},
        "boxes": {},
        "missing_scenes": missing,
        "bad_features": bad,
        "dropped_boxes": sum(type_counts[t] for t in drop),
        "unknown_type_ids": unknown,
        "boxes_outside_scene": 0,
        "unreadable_scenes": [],
    }


@dataclass
class _Conversion:
    """One run's inputs that every scene is chipped with, and the counts it adds to."""

    images: Path
    per_scene: dict[str, np.ndarray]
    label_of: dict[int, int]  # xView type id -> category id, for the classes kept
    cats: list[dict]
    cfg: ChipConfig
    skip_unreadable: bool
    counts: dict

    def convert_split(self, split: str, scenes: list[str], stage: Path, bar) -> None:
        """Chip one split's scenes into stage/<split>/ and write its chip and whole-scene label files."""
        folder = stage / split
        folder.mkdir()
        chips, whole = _CocoWriter(self.cats), _CocoWriter(self.cats)
        self.counts["chips"][split] = self.counts["boxes"][split] = 0
        task = bar.add_task(f"chipping {split}", total=len(scenes))
        for scene in scenes:
            self.convert_scene(split, scene, folder, chips, whole)
            bar.advance(task)
        chips.write(stage / f"{split}.json")
        whole.write(stage / f"{split}_scenes.json")

    def convert_scene(
        self, split: str, scene: str, folder: Path, chips: _CocoWriter, whole: _CocoWriter
    ) -> None:
        """Chip one scene into `folder` and count it. An unreadable scene stops the run, or with
        `skip_unreadable` is forgotten (its chips and records removed) and counted as unreadable."""
        boxes, labels = self.known_boxes(scene)
        before = [(w, len(w.images), len(w.annotations)) for w in (chips, whole)]
        try:
            n_chips, n_boxes, outside = chip_scene(
                self.images / scene, boxes, labels, folder, chips, self.cfg, whole
            )
        except UserError as exc:
            if not self.skip_unreadable:
                raise ParameterError(
                    "skip_unreadable", f"{exc} (`skip_unreadable` leaves such scenes out)"
                ) from None
            _forget(before, folder)
            self.counts["unreadable_scenes"].append(str(exc))
            self.counts["scenes"][split] -= 1
            return
        self.counts["chips"][split] += n_chips
        self.counts["boxes"][split] += n_boxes
        self.counts["boxes_outside_scene"] += outside

    def known_boxes(self, scene: str) -> tuple[np.ndarray, np.ndarray]:
        """A scene's boxes (xyxy) of the classes kept, and their category ids."""
        boxes = self.per_scene[scene]
        type_ids = boxes[:, 0].astype(int)
        known = np.isin(type_ids, list(self.label_of))
        return boxes[known, 1:], np.array([self.label_of[t] for t in type_ids[known].tolist()], int)


def _forget(kept: list[tuple[_CocoWriter, int, int]], folder: Path) -> None:
    """Undo what a scene that failed part-way added: its chips, and their records and the scene's in each
    writer (kept: the writer and its numbers of images and annotations before the scene)."""
    chips, n_images, _ = kept[0]
    for record in chips.images[n_images:]:
        (folder / record["file_name"]).unlink(missing_ok=True)
    for writer, n_images, n_annotations in kept:
        del writer.images[n_images:], writer.annotations[n_annotations:]


def _publish(stage: Path, out: Path) -> None:
    """Move the finished outputs from `stage` into `out`, the previous run's into `stage` (removed with it)."""
    old = stage / "previous"
    old.mkdir()
    for name in OUTPUTS:
        if (out / name).exists():
            os.replace(out / name, old / name)
        os.replace(stage / name, out / name)


def _report(counts: dict, images: Path) -> None:
    """Log one warning line for each kind of input the run left out."""
    missing = counts["missing_scenes"]
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        log.warning(f"warning: {len(missing)} labelled scene(s) not in {images}, skipped: {shown}")
    if counts["unknown_type_ids"]:
        ids = ", ".join(f"{t} ({n} boxes)" for t, n in sorted(counts["unknown_type_ids"].items()))
        log.warning(f"warning: boxes of type ids outside the xView classes skipped: {ids}")
    if counts["boxes_outside_scene"]:
        log.warning(
            f"warning: {counts['boxes_outside_scene']} box(es) lying outside their scene skipped"
        )
    if counts["unreadable_scenes"]:
        log.warning(
            f"warning: {len(counts['unreadable_scenes'])} unreadable scene(s) skipped: "
            + "; ".join(counts["unreadable_scenes"][:3])
            + ("; ..." if len(counts["unreadable_scenes"]) > 3 else "")
        )
    if counts["bad_features"]:
        log.warning(
            f"warning: {counts['bad_features']} feature(s) without a usable image_id, "
            "type_id or bounds_imcoords skipped"
        )
