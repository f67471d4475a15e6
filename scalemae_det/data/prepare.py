"""Any labelled imagery -> chips + COCO train/val label files (`scalemae-det prepare`).

The images are read for their headers, the labels by their format's reader
(scalemae_det.data.readers), every problem a user can fix is raised before a chip is written, and
the chipper (scalemae_det.data.chipping) writes the layout prepare-xview writes, so train.py,
`evaluate --scene-level` and `score` take it as they are.

1. Options are checked first, then the output folder, then each image's header: its size, its
   bands (`bands`, as predict's), and its GSD, measured from the georeference as predict measures
   it, else `gsd`; an image with neither is refused, saying why.
2. The labels are read into boxes per image in its pixels; classes are the labels' own (in the
   format's order where it has one, else sorted by name), or `classes`, which fixes the order and
   drops the rest (counted per class).
3. Scenes: the images the labels name (an image named with no box is a negative); vector and YOLO
   labels cover every image given (an image without a YOLO file or a feature is a negative).
   Images no label names are left out and reported.
4. When no box falls on its image, nothing is written: the labels are for other images.
5. The split is by scene, seeded; a single scene cannot be split and is all train (warned).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scalemae_det.base import checks
from scalemae_det.base.errors import InputError, ParameterError, UserError
from scalemae_det.base.geo import gsd_m
from scalemae_det.base.pixels import open_raster, select_bands
from scalemae_det.data.chipping import (
    DEFAULT_SEED,
    ChipConfig,
    SceneBoxes,
    check_options,
    chip_dataset,
    inside_scene,
    natural_key,
    report_chipping,
)
from scalemae_det.data.readers import ImageHeader, LabelSet, read_labels
from scalemae_det.runtime.inputs import IMAGE_SUFFIXES, expand_scenes

log = logging.getLogger(__name__)

DEFAULT_VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Scene:
    """An image given, with what its header says: size, georeference, and the GSD to record."""

    header: ImageHeader
    gsd: float
    georeferenced: bool


def prepare(
    images: Sequence[str | Path],
    labels: str | Path,
    out: str | Path,
    *,
    class_field: str | None = None,
    classes: Sequence[str] | None = None,
    gsd: float | None = None,
    point_size: float | None = None,
    bands: Sequence[int] | None = None,
    cfg: ChipConfig = ChipConfig(),
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    skip_unreadable: bool = False,
    progress: bool = True,
) -> dict:
    """Chip `images` with their `labels` into `out` (the module doc's rules); returns counts.

    Counts: those of `chipping.chip_dataset`, and `format`, `classes` (names in category order),
    `skipped` (reason -> boxes), `dropped_classes` (name -> boxes), `unlabelled_images` (left
    out: named by no label), `unreadable_scenes`."""
    labels, out = Path(labels), Path(out)
    check_options(cfg, val_fraction)
    checks.number("gsd", gsd, lo=0, lo_open=True)
    checks.number("point_size", point_size, lo=0, lo_open=True)
    bands = checks.bands("bands", bands)
    wanted = _class_list(classes)
    if not labels.exists():
        raise ParameterError("labels", "no such file or folder", value=str(labels))
    checks.output_dir(out, "out", create=False)
    found, unreadable = _scenes(images, gsd, bands, skip_unreadable)
    fmt, label_set = read_labels(
        labels, [s.header for s in found], class_field=class_field, point_size=point_size
    )
    names = _category_names(label_set, wanted)
    cats = [{"id": k, "name": n} for k, n in enumerate(names, 1)]
    scenes, counts = _scene_boxes(found, label_set, names)
    _check_some_box_lands(labels, found, scenes)
    checks.output_dir(out, "out")
    counts.update(
        chip_dataset(
            scenes,
            cats,
            out,
            cfg=cfg,
            val_fraction=val_fraction,
            seed=seed,
            bands=bands,
            skip_unreadable=skip_unreadable,
            progress=progress,
        )
    )
    counts["unreadable_scenes"] = unreadable + counts["unreadable_scenes"]
    counts.update(format=fmt, classes=names)
    counts["gsd_ignored"] = sum(s.georeferenced for s in found) if gsd is not None else 0
    _report(counts, label_set, val_fraction, gsd)
    return counts


def _class_list(classes: Sequence[str] | None) -> list[str] | None:
    """`classes` as a list of distinct non-empty names, or None."""
    if classes is None:
        return None
    names = [str(c).strip() for c in classes]
    if not names or not all(names):
        raise ParameterError("classes", "expected comma-separated class names", value=classes)
    repeated = [n for n, k in Counter(names).items() if k > 1]
    if repeated:
        raise ParameterError("classes", f"class {repeated[0]!r} given twice", value=classes)
    return names


def _scenes(
    items: Sequence[str | Path], gsd: float | None, bands, skip_unreadable: bool
) -> tuple[list[Scene], list[str]]:
    """The images given, with their headers; and the unreadable ones left out
    (`skip_unreadable`)."""
    sources, problems = expand_scenes([str(i) for i in items], suffixes=IMAGE_SUFFIXES)
    # a file stays the Path the label readers match by; a URL is its Source (name, stem, path)
    paths = [s if s.remote else Path(s.path) for s in sources]
    if problems:
        raise ParameterError("images", "; ".join(problems))
    if not paths:
        raise ParameterError("images", "no images given")
    found, unreadable = [], []
    for path in paths:
        try:
            found.append(open_image_header(path, gsd, bands))
        except ParameterError:
            raise
        except UserError as exc:
            if not skip_unreadable:
                raise ParameterError(
                    "skip_unreadable", f"{exc} (`skip_unreadable` leaves such images out)"
                ) from None
            unreadable.append(str(exc))
    if not found:
        raise ParameterError("images", "none of the images can be read: " + "; ".join(unreadable))
    return found, unreadable


def open_image_header(path, gsd: float | None, bands) -> Scene:
    """An image's header, its bands checked and its GSD: measured from its georeference, else
    `gsd`; a ParameterError naming `gsd` when it has neither."""
    with open_raster(path) as ds:
        select_bands(ds, bands)
        header = ImageHeader(
            path if hasattr(path, "stem") else Path(path), ds.width, ds.height, ds.crs, ds.transform
        )
        measured = gsd_m(ds.crs, ds.transform, ds.width, ds.height)
    if measured is None and gsd is None:
        raise ParameterError(
            "gsd",
            "the image has no georeference to measure its ground sample distance from; give "
            "`gsd` (metres per pixel)",
            source=str(path),
        )
    if measured is not None and not (math.isfinite(measured) and measured > 0):
        raise InputError(f"{path}: its georeference gives no usable GSD ({measured})")
    return Scene(header, measured or gsd, measured is not None)


def _category_names(label_set: LabelSet, wanted: list[str] | None) -> list[str]:
    """Category names in id order (rule 2)."""
    if wanted is not None:
        return wanted
    present = {c for names in label_set.classes.values() for c in names}
    if label_set.class_order is not None:
        return list(label_set.class_order)
    if not present:
        raise InputError("the labels hold no box of positive size")
    return sorted(present, key=natural_key)


def _scene_boxes(
    found: Sequence[Scene], label_set: LabelSet, names: list[str]
) -> tuple[list[SceneBoxes], dict]:
    """The scenes to chip (rule 3) with their boxes' category ids; counts of what was left out."""
    label_of = {n: k for k, n in enumerate(names, 1)}
    dropped, unlabelled, scenes = Counter(), [], []
    for scene in found:
        path = scene.header.path
        if path not in label_set.boxes:
            unlabelled.append(str(path))
            continue
        boxes = label_set.boxes.get(path, np.zeros((0, 4)))
        classes = label_set.classes.get(path, [])
        keep = np.array([c in label_of for c in classes], bool).reshape(-1)
        dropped.update(c for c in classes if c not in label_of)
        ids = np.array([label_of[c] for c in classes if c in label_of], int)
        scenes.append(SceneBoxes(path, boxes[keep], ids, scene.gsd))
    if not scenes:
        raise InputError("the labels name none of the images given")
    counts = {
        "skipped": {k: n for k, n in label_set.skipped.items() if n},
        "dropped_classes": dict(dropped),
        "unlabelled_images": unlabelled,
    }
    return scenes, counts


def _check_some_box_lands(labels: Path, found: Sequence[Scene], scenes: Sequence[SceneBoxes]):
    """Rule 4: an error when there are boxes and none of them intersects its image."""
    size = {s.header.path: (s.header.width, s.header.height) for s in found}
    total = sum(len(s.boxes) for s in scenes)
    landed = sum(len(inside_scene(s.boxes, s.labels, *size[s.path])[0]) for s in scenes)
    if total and not landed:
        raise InputError(
            f"{labels}: none of the {total} boxes falls on its image (all lie outside it)"
        )


def _report(counts: dict, label_set: LabelSet, val_fraction: float, gsd: float | None) -> None:
    """Log one warning line for each kind of input the run left out or could not honour."""
    for reason, n in sorted(counts["skipped"].items()):
        if n:
            log.warning(f"warning: {n} {reason} skipped")
    if counts["dropped_classes"]:
        shown = ", ".join(f"{c} ({n})" for c, n in sorted(counts["dropped_classes"].items()))
        log.warning(f"warning: boxes of classes left out of the class list dropped: {shown}")
    for note in label_set.notes:
        log.warning(f"warning: {note}")
    if counts["unlabelled_images"]:
        n = len(counts["unlabelled_images"])
        shown = ", ".join(Path(p).name for p in counts["unlabelled_images"][:5])
        log.warning(
            f"warning: {n} image(s) that no label names left out: {shown}"
            + (", ..." if n > 5 else "")
        )
    if counts["gsd_ignored"]:
        log.warning(
            f"warning: gsd {gsd:g} not used for {counts['gsd_ignored']} georeferenced image(s): "
            "their GSD is measured from the georeference"
        )
    if val_fraction > 0 and sum(counts["scenes"].values()) == 1:
        log.warning(
            "warning: one scene cannot be split by scene: it is all train and val is empty "
            "(give more images, or a val fraction of 0 to say so)"
        )
    report_chipping(counts, log, "image")
