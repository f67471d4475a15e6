"""Scenes and their boxes -> chips + COCO train/val label files, the layout train.py reads.

The one chipper behind `prepare` and `prepare-xview`: a label reader (scalemae_det.data.readers)
turns its format into `SceneBoxes` (each scene's boxes in its own pixels, with category ids), and
`chip_dataset` does the rest. Scenes are chipped one at a time, a strip of chip rows read at once,
so memory is bounded by one strip of a scene. The split is by scene (chips of one scene never
straddle train and val), seeded, over the scenes given.

Output layout, ready for train.py's --train_image_dir/--train_label_file (and val):

    OUT/train/<scene>_<x0>_<y0>.tif   OUT/train.json   OUT/train_scenes.json
    OUT/val/<scene>_<x0>_<y0>.tif     OUT/val.json     OUT/val_scenes.json

`<split>_scenes.json` holds the same boxes per whole scene, in scene pixels (one image record per
scene, `file_name` the scene's): the ground truth of scene-level evaluation
(scalemae_det.metrics.scenes).
Image records keep their `scene`, chip offset (`x0`, `y0`) and `gsd` (metres: from the scene's
georeference as predict measures it, else the one the reader was given).

A box cut by a chip edge is judged per axis against what the chip can show: it is kept (clipped)
when, along x and along y, at least `min_visible` of min(box side, chip side) is inside. So a box
larger than a chip (facilities, lots, ships) is kept clipped in the chips it crosses, and a box
across a chip corner is not lost to an area rule (60% of each side is 36% of the area). What
intersects a chip without passing is written as a COCO `iscrowd` region rather than dropped:
pycocotools ignores detections on it when scoring the label file, and train.py's dataset leaves it
out (torchvision's heads have no ignore regions). Scene-level evaluation has no chip edges at all.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scalemae_det.base import checks
from scalemae_det.base.atomic import atomic_path, work_dir
from scalemae_det.base.errors import InputError, ParameterError, UserError
from scalemae_det.base.geo import gsd_m
from scalemae_det.base.pixels import open_raster, raster_errors
from scalemae_det.data.labels import coco_annotation
from scalemae_det.runtime.tiling import offsets  # chips are laid out as predict lays out tiles

if TYPE_CHECKING:
    from rasterio.windows import Window

DEFAULT_SEED = 13
OUTPUTS = (
    "train",
    "val",
    "train.json",
    "val.json",
    "train_scenes.json",
    "val_scenes.json",
)  # what a run writes under `out`, all replaced together


@dataclass(frozen=True)
class ChipConfig:
    chip: int = 800
    overlap: float = 0.1  # fraction of the chip shared with the next one
    min_visible: float = (
        0.5  # keep a clipped box when, per axis, this fraction of what the chip can show is in it
    )
    min_size: float = 2.0  # ... and it is at least this many pixels wide and high


@dataclass(frozen=True)
class SceneBoxes:
    """One scene to chip: its image, its boxes (N, 4) xyxy in its own pixels and their category ids
    (N,) in 1..K. `name` is the scene's file name in the label files (unique in a run); `gsd`
    (metres) is recorded when the image has no georeference to measure it from."""

    path: Path  # a file; an image given by URL: its runtime.inputs.Source
    boxes: np.ndarray
    labels: np.ndarray
    gsd: float | None = None
    name: str = field(default="")

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", _path_key(self.path).name)


# --- geometry --------------------------------------------------------------------------------


def clip_boxes(boxes: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Boxes (N, 4 xyxy) clipped to the window at (x0, y0), in window pixels."""
    return np.clip(boxes - [x0, y0, x0, y0], 0, [width, height, width, height])


def visible(
    boxes: np.ndarray, clipped: np.ndarray, cfg: ChipConfig, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, ignored) masks of boxes clipped to a width x height chip (see the module doc).

    Kept: per axis, the visible side is at least `min_visible` of what the chip can show of that
    side, min(side, chip side), and at least `min_size` px. Ignored: the others that intersect the
    chip.
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


# --- the split ---------------------------------------------------------------------------------


def split_scenes(
    scenes: Iterable[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Seeded image-level split; at least one val scene when val_fraction > 0 and there are two.
    One scene cannot be split: it is all train."""
    ordered = sorted(scenes, key=natural_key)
    random.Random(seed).shuffle(ordered)
    n_val = round(len(ordered) * val_fraction)
    if val_fraction > 0 and len(ordered) > 1:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    elif len(ordered) <= 1:
        n_val = 0
    return sorted(ordered[n_val:], key=natural_key), sorted(ordered[:n_val], key=natural_key)


def natural_key(name: str) -> tuple:
    """Sort key ordering digit runs by value: "2.tif" before "10.tif"."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


# --- writing -----------------------------------------------------------------------------------


class CocoWriter:
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
        """Record one image with its boxes and their category ids, and its ignore (iscrowd)
        regions."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, **record})
        for group, group_labels, iscrowd in ((boxes, labels, 0), (crowd, crowd_labels, 1)):
            for box, label in zip(group.tolist(), group_labels.tolist()):
                self.annotations.append(
                    coco_annotation(
                        len(self.annotations) + 1, image_id, int(label), box, iscrowd=iscrowd
                    )
                )

    def mark(self) -> tuple[int, int]:
        """How many image and annotation records there are now (to `undo` back to)."""
        return len(self.images), len(self.annotations)

    def undo(self, mark: tuple[int, int]) -> list[dict]:
        """Drop the records added since `mark`; returns the image records dropped."""
        dropped = self.images[mark[0] :]
        del self.images[mark[0] :], self.annotations[mark[1] :]
        return dropped

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


def write_chip(path: Path, data: np.ndarray, src, win, bands: Sequence[int] | None = None) -> None:
    """Write one chip's pixels atomically as a deflate GeoTIFF with its window's georeference,
    keeping
    the scene's profile (less its block layout, which a smaller chip may not fit) and colour bands.
    With `bands` chosen, the chip holds those bands as the model's red, green and blue (or grey)."""
    import rasterio
    from rasterio.enums import ColorInterp

    profile = {
        k: v
        for k, v in src.profile.items()
        if k not in ("blockxsize", "blockysize", "tiled", "interleave", "photometric")
    }
    profile.update(
        driver="GTiff",
        count=data.shape[0],
        width=win.width,
        height=win.height,
        transform=src.window_transform(win),
        compress="deflate",
    )
    if bands:
        interp = (
            [ColorInterp.gray]
            if len(bands) == 1
            else [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        )
    else:
        interp = src.colorinterp
    with atomic_path(path) as tmp, _quiet_georeference(), rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.colorinterp = interp


@contextmanager
def _quiet_georeference() -> Iterator[None]:
    """A scene without a georeference (a plain PNG) makes chips without one: expected, not
    warned."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def chip_scene(
    scene: SceneBoxes,
    out_dir: Path,
    writer: CocoWriter,
    cfg: ChipConfig,
    scenes: CocoWriter | None = None,
    bands: Sequence[int] | None = None,
) -> tuple[int, int, int]:
    """Write one scene's chips as GeoTIFFs with their window's georeference and record them.

    1. Boxes are clipped to the scene; those left empty are counted as outside.
    2. The scene and its clipped boxes go to `scenes` (the scene-level truth).
    3. Each chip's boxes are clipped to it and kept or made ignore regions by `visible`.
    4. Chips that are blank (all zero) and hold no box or ignore region are skipped.
    `bands` (1-based, as predict's) picks the bands chips hold; None keeps all of the scene's.
    Returns the numbers of chips and kept boxes written and of boxes outside the scene.
    """
    n_chips = n_boxes = 0
    with open_raster(scene.path) as src, raster_errors(scene.path):
        scene_boxes, scene_labels, n_outside = inside_scene(
            scene.boxes, scene.labels, src.width, src.height
        )
        gsd = gsd_m(src.crs, src.transform, src.width, src.height) or scene.gsd
        extra = {} if gsd is None else {"gsd": gsd}
        if scenes is not None:
            scenes.add(
                {"file_name": scene.name, "width": src.width, "height": src.height, **extra},
                scene_boxes,
                scene_labels,
            )
        stem = Path(scene.name).stem
        strip, strip_y = None, None
        for win in chip_windows(src.width, src.height, cfg):
            if win.row_off != strip_y:  # one read per row of chips (PNG and JPEG decode in order)
                from rasterio.windows import Window

                strip_y = win.row_off
                strip = src.read(bands, window=Window(0, strip_y, src.width, win.height))
            data = strip[..., win.col_off : win.col_off + win.width]
            clipped = clip_boxes(scene_boxes, win.col_off, win.row_off, win.width, win.height)
            keep, ignore = visible(scene_boxes, clipped, cfg, win.width, win.height)
            if not keep.any() and not ignore.any() and not data.any():
                continue  # blank, and nothing to learn or ignore there
            name = f"{stem}_{win.col_off}_{win.row_off}.tif"
            write_chip(out_dir / name, data, src, win, bands)
            writer.add(
                {
                    "file_name": name,
                    "width": int(win.width),
                    "height": int(win.height),
                    "scene": scene.name,
                    "x0": win.col_off,
                    "y0": win.row_off,
                    **extra,
                },
                clipped[keep],
                scene_labels[keep],
                clipped[ignore],
                scene_labels[ignore],
            )
            n_chips += 1
            n_boxes += int(keep.sum())
    return n_chips, n_boxes, n_outside


# --- the whole run -------------------------------------------------------------------------------


def check_options(cfg: ChipConfig, val_fraction: float) -> None:
    """Raise a ParameterError naming the first chipping option or split fraction out of its
    range."""
    checks.number("val_fraction", val_fraction, lo=0, hi=1, hi_open=True)
    checks.number("chip", cfg.chip, lo=1, integer=True)
    checks.number("overlap", cfg.overlap, lo=0, hi=1, hi_open=True)
    checks.number("min_visible", cfg.min_visible, lo=0, hi=1, lo_open=True)
    checks.number("min_size", cfg.min_size, lo=0)


def _path_key(path):
    """A file path as a Path; a URL's runtime.inputs.Source (its name, stem and path) as it is."""
    return Path(path) if isinstance(path, str | os.PathLike) else path


def check_scene_names(scenes: Sequence[SceneBoxes]) -> None:
    """Scene names are the label files' keys and chip names start with their stems: both must be
    unique in a run."""
    for key, what in ((lambda s: s.name, "name"), (lambda s: Path(s.name).stem, "stem")):
        seen: dict[str, Path] = {}
        for s in scenes:
            other = seen.setdefault(key(s), _path_key(s.path))
            if other != _path_key(s.path):
                raise InputError(
                    f"{s.path}: same file {what} as {other}; scenes must differ in their "
                    f"{what}s (their chips are named after them)"
                )


def chip_dataset(
    scenes: Sequence[SceneBoxes],
    categories: list[dict],
    out: Path,
    *,
    cfg: ChipConfig = ChipConfig(),
    val_fraction: float = 0.2,
    seed: int = DEFAULT_SEED,
    bands: Sequence[int] | None = None,
    skip_unreadable: bool = False,
    progress: bool = True,
    work_name: str = "prepare",
) -> dict:
    """Chip `scenes` into `out` (the layout in the module doc); returns counts for the summary.

    Everything is written into a work folder inside `out` and moved into place only when every scene
    is done, replacing the previous run's train/, val/ and label files as a whole: a failed or
    killed run leaves the previous output as it was (and its work folder is removed by the next
    run), and a rerun never keeps chips of a scene that has changed split. An unreadable scene stops
    the run, naming GDAL's cause, unless `skip_unreadable`, which leaves it out and counts it.

    Counts: `scenes`, `chips` and `boxes` per split, `boxes_outside_scene`, `unreadable_scenes`
    (one line each), `split` (scene names per split).
    """
    from rich.progress import Progress

    out = Path(out)
    check_options(cfg, val_fraction)
    check_scene_names(scenes)
    by_name = {s.name: s for s in scenes}
    train, val = split_scenes(by_name, val_fraction, seed)
    counts = {
        "scenes": {"train": len(train), "val": len(val)},
        "chips": {},
        "boxes": {},
        "boxes_outside_scene": 0,
        "unreadable_scenes": [],
        "split": {"train": train, "val": val},
    }
    with work_dir(out / work_name) as stage, Progress(disable=not progress, transient=True) as bar:
        for split, names in (("train", train), ("val", val)):
            folder = stage / split
            folder.mkdir()
            chips, whole = CocoWriter(categories), CocoWriter(categories)
            counts["chips"][split] = counts["boxes"][split] = 0
            task = bar.add_task(f"chipping {split}", total=len(names))
            for name in names:
                _convert_scene(
                    by_name[name], split, folder, chips, whole, cfg, bands, skip_unreadable, counts
                )
                bar.advance(task)
            chips.write(stage / f"{split}.json")
            whole.write(stage / f"{split}_scenes.json")
        publish(stage, out)
    return counts


def _convert_scene(
    scene: SceneBoxes,
    split: str,
    folder: Path,
    chips: CocoWriter,
    whole: CocoWriter,
    cfg: ChipConfig,
    bands: Sequence[int] | None,
    skip_unreadable: bool,
    counts: dict,
) -> None:
    """Chip one scene into `folder` and count it. An unreadable scene stops the run, or with
    `skip_unreadable` is forgotten (its chips and records removed) and counted as unreadable."""
    marks = chips.mark(), whole.mark()
    try:
        n_chips, n_boxes, outside = chip_scene(scene, folder, chips, cfg, whole, bands)
    except UserError as exc:
        if not skip_unreadable:
            raise ParameterError(
                "skip_unreadable", f"{exc} (`skip_unreadable` leaves such scenes out)"
            ) from None
        for record in chips.undo(marks[0]):
            (folder / record["file_name"]).unlink(missing_ok=True)
        whole.undo(marks[1])
        counts["unreadable_scenes"].append(str(exc))
        counts["scenes"][split] -= 1
        counts["split"][split].remove(scene.name)
        return
    counts["chips"][split] += n_chips
    counts["boxes"][split] += n_boxes
    counts["boxes_outside_scene"] += outside


def report_chipping(counts: dict, log: logging.Logger, noun: str) -> None:
    """One warning line for each kind of input `chip_dataset` left out (its counts), naming the
    inputs by `noun` ("scene", "image") as the command that ran it does."""
    if counts["boxes_outside_scene"]:
        n = counts["boxes_outside_scene"]
        log.warning(f"warning: {n} box(es) lying outside their {noun} skipped")
    if counts["unreadable_scenes"]:
        n = len(counts["unreadable_scenes"])
        shown = "; ".join(counts["unreadable_scenes"][:3]) + ("; ..." if n > 3 else "")
        log.warning(f"warning: {n} unreadable {noun}(s) skipped: {shown}")


def publish(stage: Path, out: Path) -> None:
    """Move the finished outputs from `stage` into `out`, the previous run's into `stage` (removed
    with it)."""
    old = stage / "previous"
    old.mkdir()
    for name in OUTPUTS:
        if (out / name).exists():
            os.replace(out / name, old / name)
        os.replace(stage / name, out / name)
