"""Label readers: one module per label format, each turning its format into boxes per image.

    voc     Pascal VOC XML, a file or a folder of them (LabelImg, CVAT, Label Studio)
    yolo    a folder of YOLO txt files, names from classes.txt or data.yaml
    table   CSV rows image_path,xmin,ymin,xmax,ymax,label (DeepForest's format)
    coco_images  COCO JSON of whole images
    vector  GeoJSON, GeoPackage, Shapefile, FlatGeobuf in any CRS (through pyogrio)
    xview   xView's GeoJSON of pixel boxes (`prepare-xview`, its own command)

Every reader but xView's takes the images' headers (`ImageHeader`, read once before any work) and
returns a `LabelSet`: per image its boxes (N, 4) xyxy in the image's pixels and their class names,
what it skipped (counted by reason) and, where the format fixes one, its class order. A label
naming an image that is not among the images given is an error, listing what is missing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import numpy as np

from scalemae_det.base.errors import InputError, ParameterError, UserError

ZERO_SIZE = "box(es) of zero or negative size"
VECTOR_SUFFIXES = {".geojson", ".gpkg", ".shp", ".fgb"}
FORMATS = ("voc", "yolo", "csv", "coco", "vector")


@dataclass(frozen=True)
class ImageHeader:
    """What a reader needs of an image: its size and georeference (`crs` None without one)."""

    path: Path  # a file; an image given by URL: its runtime.inputs.Source (name, stem, path)
    width: int
    height: int
    crs: object = None
    transform: object = None

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class LabelSet:
    """Boxes per image (by the image's path), their class names, and what was skipped.

    `class_order`: the classes in the order the format numbers them (YOLO ids, COCO category ids),
    None where the format has no order. `notes`: other one-line warnings of the reader."""

    boxes: dict[Path, np.ndarray] = field(default_factory=dict)
    classes: dict[Path, list[str]] = field(default_factory=dict)
    class_order: list[str] | None = None
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def add(self, image: ImageHeader, boxes: Sequence[Sequence[float]], classes: Sequence[str]):
        """Record an image's boxes (xyxy), skipping and counting those of zero or negative size;
        an image named with no usable box is still recorded (a negative)."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        good = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & np.isfinite(b).all(axis=1)
        self.skipped[ZERO_SIZE] += int((~good).sum())
        old_b = self.boxes.get(image.path, np.zeros((0, 4)))
        self.boxes[image.path] = np.concatenate([old_b, b[good]])
        kept = [str(c) for c, g in zip(classes, good.tolist()) if g]
        self.classes[image.path] = self.classes.get(image.path, []) + kept


class ImageIndex:
    """The images given, found by the names labels use for them: a path relative to the label
    file's folder or to an images folder, or (when unique) the file name, or its stem."""

    def __init__(self, headers: Sequence[ImageHeader]):
        self.headers = list(headers)
        self.by_path = {_resolved(h.path): h for h in headers}
        self.by_name: dict[str, list[ImageHeader]] = {}
        self.by_stem: dict[str, list[ImageHeader]] = {}
        for h in headers:
            self.by_name.setdefault(h.path.name, []).append(h)
            self.by_stem.setdefault(h.path.stem, []).append(h)

    def find(self, ref: str, base: Path, where: str) -> ImageHeader | None:
        """The image `ref` names (relative to `base`, or absolute), None if it is not there; an
        error naming `where` when the name fits several images."""
        ref = str(ref).strip()
        if not ref:
            return None
        for candidate in (Path(ref), base / ref):
            hit = self.by_path.get(_resolved(candidate))
            if hit is not None:
                return hit
        name = PureWindowsPath(ref).name  # the last part, whether / or \ separates them
        if Path(name).suffix:
            return self._unique(self.by_name, name, ref, where)
        return self.find_stem(name, where)

    def find_stem(self, stem: str, where: str) -> ImageHeader | None:
        """The one image of file stem `stem` (YOLO pairs labels and images so), None if none."""
        return self._unique(self.by_stem, stem, stem, where)

    @staticmethod
    def _unique(table: dict, key: str, ref: str, where: str) -> ImageHeader | None:
        hits = table.get(key, [])
        if len(hits) > 1:
            shown = ", ".join(str(h.path) for h in hits[:3])
            raise InputError(f"{where}: {ref!r} fits several images ({shown}); give one of them")
        return hits[0] if hits else None


def missing_images(where: Path | str, refs: Sequence[str]) -> UserError:
    """The error for labels naming images that are not among those given."""
    shown = ", ".join(refs[:5]) + (f" and {len(refs) - 5} more" if len(refs) > 5 else "")
    return ParameterError(
        "images",
        f"{len(refs)} image(s) the labels name are not among `images`: {shown}",
        source=str(where),
    )


def _resolved(path):
    """A file's absolute path; a URL's Source as it is."""
    return Path(os.path.abspath(path)) if isinstance(path, str | os.PathLike) else path


def detect_format(labels: Path) -> str:
    """The label format of a file or folder, by its suffix and content (one of FORMATS)."""
    if labels.is_dir():
        files = [p for p in labels.iterdir() if p.is_file()]
        xml = [p for p in files if p.suffix.lower() == ".xml"]
        txt = [p for p in files if p.suffix.lower() == ".txt" and p.name != "classes.txt"]
        if xml and txt:
            raise InputError(
                f"{labels}: holds both .xml (Pascal VOC) and .txt (YOLO) files; give a folder "
                "of one format"
            )
        if xml:
            return "voc"
        if txt:
            return "yolo"
        raise InputError(
            f"{labels}: no label files there (a folder takes Pascal VOC .xml or YOLO .txt files)"
        )
    suffix = labels.suffix.lower()
    if suffix == ".xml":
        return "voc"
    if suffix == ".csv":
        return "csv"
    if suffix in VECTOR_SUFFIXES:
        return "vector"
    if suffix == ".json":
        head = _json_kind(labels)
        if head:
            return head
    if suffix == ".txt":
        raise InputError(f"{labels}: YOLO labels are a folder of .txt files; give the folder")
    raise InputError(
        f"{labels}: unknown label format (expected Pascal VOC .xml, a YOLO folder, .csv, COCO "
        ".json, or a vector file: .geojson, .gpkg, .shp, .fgb)"
    )


def _json_kind(path: Path) -> str | None:
    """COCO ('coco') or GeoJSON ('vector') by the JSON's top-level keys."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file: {exc}") from None
    if isinstance(data, dict) and "images" in data:
        return "coco"
    if isinstance(data, dict) and data.get("type") in ("FeatureCollection", "Feature"):
        return "vector"
    return None


def read_labels(
    labels: Path,
    images: Sequence[ImageHeader],
    *,
    class_field: str | None = None,
    point_size: float | None = None,
) -> tuple[str, LabelSet]:
    """The labels' format and their boxes per image (see the module doc).

    `class_field` names the attribute (vector) or column (CSV) holding the class; `point_size`
    (metres) is the side of the square box a point feature becomes (vector only)."""
    labels = Path(labels)
    fmt = detect_format(labels)
    index = ImageIndex(images)
    if class_field is not None and fmt not in ("vector", "csv"):
        raise ParameterError(
            "class_field",
            f"applies to vector and CSV labels; {fmt} labels carry their class themselves",
            value=class_field,
        )
    if point_size is not None and fmt != "vector":
        raise ParameterError(
            "point_size", f"applies to point features of vector labels, not {fmt}", value=point_size
        )
    if fmt == "voc":
        from scalemae_det.data.readers.voc import read_voc

        return fmt, read_voc(labels, index)
    if fmt == "yolo":
        from scalemae_det.data.readers.yolo import read_yolo

        return fmt, read_yolo(labels, index)
    if fmt == "csv":
        from scalemae_det.data.readers.table import read_table

        return fmt, read_table(labels, index, class_field)
    if fmt == "coco":
        from scalemae_det.data.readers.coco_images import read_coco_images

        return fmt, read_coco_images(labels, index)
    from scalemae_det.data.readers.vector import read_vector

    return fmt, read_vector(labels, index, class_field, point_size)
