"""Reading and checking a COCO label file against its image folder (torch-free).

Bad records are skipped and counted, so one broken annotation never stops an epoch; what is
left is an index the dataset can read from without further checks.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scalemae_det.base.errors import InputError, MissingPathError, PathError

log = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    image_id: int
    path: Path
    width: int
    height: int
    gsd: float | None  # the record's `gsd` field; the dataset prefers the georeference
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels, clipped to the image
    labels: np.ndarray  # (N,) int64 in 1..K


@dataclass
class CocoIndex:
    images: list[ImageRecord]
    categories: list[dict]  # categories[k - 1]: the label file's category of label k
    skipped: Counter  # reason -> number of records skipped for it

    @property
    def category_ids(self) -> list[int]:  # category_ids[k - 1]: the label file's id of label k
        return [c["id"] for c in self.categories]

    @property
    def class_names(self) -> list[str]:  # class_names[k - 1]: name of label k
        return [str(c.get("name", c["id"])) for c in self.categories]


def read_coco_json(path: str | os.PathLike) -> dict:
    """The label file's dict; one-line user errors for unreadable, non-JSON or non-COCO files."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise PathError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "categories")
    ):
        raise InputError(f"{path}: not a COCO label file (needs 'images' and 'categories' lists)")
    return data


def index_coco(image_dir: str | os.PathLike, label_file: str | os.PathLike) -> CocoIndex:
    """Check every record of `label_file` against `image_dir` and index the usable ones.

    Categories are mapped to contiguous labels 1..K in increasing id order. Skipped: image
    records without a positive size or an id, a missing file or a file_name leading out of
    the image dir; annotations with a non-positive size, lying wholly outside their image, of an
    unknown category or image. Crowd annotations are left out (not counted: they are regions,
    not objects). Boxes reaching past the image edge are clipped.
    """
    image_dir, label_file = Path(image_dir), Path(label_file)
    if not image_dir.is_dir():
        raise MissingPathError(f"{image_dir}: images directory not found")
    data = read_coco_json(label_file)
    by_id = {}
    for c in data["categories"]:
        if isinstance(c, dict) and _is_int(c.get("id")):
            by_id.setdefault(c["id"], c)
    cats = [by_id[i] for i in sorted(by_id)]
    if not cats:
        raise InputError(f"{label_file}: no categories")
    label_of = {c["id"]: k for k, c in enumerate(cats, 1)}
    skipped = Counter()

    root = Path(os.path.abspath(image_dir))
    records: dict[int, ImageRecord] = {}
    for img in data["images"]:
        reason = _image_problem(img, root, records)
        if reason:
            skipped[reason] += 1
            continue
        records[img["id"]] = ImageRecord(
            img["id"],
            root / img["file_name"],
            int(img["width"]),
            int(img["height"]),
            _gsd_field(img),
            [],
            [],
        )

    for ann in data.get("annotations", []):
        if not isinstance(ann, dict) or ann.get("iscrowd", 0):
            continue
        image_id, cat_id = ann.get("image_id"), ann.get("category_id")
        rec = records.get(image_id) if _is_int(image_id) else None
        box = _xyxy(ann.get("bbox"))
        if rec is None:
            skipped["annotation of an unknown or skipped image"] += 1
        elif not _is_int(cat_id) or cat_id not in label_of:
            skipped["unknown category"] += 1
        elif box is None:
            skipped["box of zero or negative size (or malformed)"] += 1
        else:
            x0, y0, x1, y1 = (
                max(box[0], 0),
                max(box[1], 0),
                min(box[2], rec.width),
                min(box[3], rec.height),
            )
            if x1 <= x0 or y1 <= y0:
                skipped["box outside its image"] += 1
                continue
            rec.boxes.append((x0, y0, x1, y1))
            rec.labels.append(label_of[cat_id])

    if not records:
        raise InputError(
            f"{label_file}: no usable image record (of {len(data['images'])}) "
            f"with its file in {image_dir}"
        )
    for rec in records.values():
        rec.boxes = np.asarray(rec.boxes, np.float32).reshape(-1, 4)
        rec.labels = np.asarray(rec.labels, np.int64)
    if skipped:
        detail = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
        log.warning(
            f"warning: {label_file}: skipped {sum(skipped.values())} bad record(s): {detail}"
        )
    return CocoIndex(list(records.values()), cats, skipped)


def coco_annotation(
    ann_id: int,
    image_id: int,
    category_id: int,
    box: tuple[float, float, float, float],
    iscrowd: int = 0,
) -> dict:
    """The COCO annotation of an xyxy pixel box (`iscrowd` 1: a region detections are not scored
    on)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x0, y0, w, h],
        "area": w * h,
        "iscrowd": iscrowd,
    }


def indexed_coco(images: list[ImageRecord], categories: list[dict]) -> dict:
    """COCO labels of what `index_coco` kept: the usable images and their (clipped) boxes.

    Scoring against these rather than the raw file means an image the index skipped is neither
    predicted nor counted as missed, and boxes are the ones the model trained on.
    """
    out_images, annotations = [], []
    for rec in images:
        out_images.append({"id": rec.image_id, "width": rec.width, "height": rec.height})
        for box, label in zip(rec.boxes.tolist(), rec.labels.tolist()):
            annotations.append(
                coco_annotation(
                    len(annotations) + 1, rec.image_id, categories[label - 1]["id"], box
                )
            )
    return {"images": out_images, "annotations": annotations, "categories": categories}


def _image_problem(img, root: Path, seen: dict) -> str | None:
    """Why an image record cannot be used, or None."""
    if not isinstance(img, dict) or not _is_int(img.get("id")) or img["id"] in seen:
        return "image record without a unique integer id"
    if not all(_is_number(img.get(k)) and img[k] >= 1 for k in ("width", "height")):
        return "image of zero or negative size"
    name = img.get("file_name")
    if not isinstance(name, str) or not name:
        return "image record without a file_name"
    path = Path(os.path.normpath(root / name))  # lexical: symlinked images stay allowed
    if not path.is_relative_to(root):
        return "file_name outside the image dir"
    if not path.is_file():
        return "missing image file"
    if "gsd" in img and _gsd_field(img) is None:
        return "gsd that is not a positive number"
    return None


def _gsd_field(img: dict) -> float | None:
    g = img.get("gsd")
    return float(g) if _is_number(g) and math.isfinite(g) and g > 0 else None


def _xyxy(bbox) -> tuple[float, float, float, float] | None:
    """xywh -> xyxy, None unless four finite numbers with positive width and height."""
    if not (isinstance(bbox, list | tuple) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return None
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    return x, y, x + w, y + h


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
