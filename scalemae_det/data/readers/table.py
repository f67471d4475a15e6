"""CSV labels, one box a row: `image_path,xmin,ymin,xmax,ymax,label` (DeepForest's format).

The columns of DeepForest's annotation files (deepforest.readthedocs.io, "Annotation" and
"Training"): pixel box edges and a label, `image_path` naming the image, relative to the CSV's
folder or an images folder, or by file name. Other columns are ignored; `class_field` names
another column for the class. A row whose box is 0,0,0,0 is how DeepForest marks an image with
no objects: it is skipped as a box of zero size and the image is kept as a negative.

1. The header must hold image_path, xmin, ymin, xmax, ymax and the class column; else an error
   listing the columns there are.
2. Every image named must be among the images given; the missing ones are listed in one error.
3. A row whose coordinates are not numbers, or a box of positive size without a class, is an
   error naming the file and line.
"""

from __future__ import annotations

import csv
from pathlib import Path

from scalemae_det.base.errors import InputError, ParameterError
from scalemae_det.data.readers import ImageIndex, LabelSet, missing_images

COORDINATES = ("xmin", "ymin", "xmax", "ymax")


def read_table(labels: Path, index: ImageIndex, class_field: str | None = None) -> LabelSet:
    """Boxes per image of a CSV file (the module doc's rules)."""
    label = class_field or "label"
    per_image: dict = {}
    missing: dict[str, None] = {}
    try:
        with open(labels, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            _check_columns(labels, reader.fieldnames or [], label, class_field)
            for row in reader:
                where = f"{labels}: line {reader.line_num}"
                image = index.find(row["image_path"] or "", labels.parent, where)
                if image is None:
                    missing.setdefault(row["image_path"] or "(empty image_path)")
                    continue
                try:
                    box = [float(row[c]) for c in COORDINATES]
                except (TypeError, ValueError):
                    raise InputError(
                        f"{where}: xmin, ymin, xmax, ymax must be numbers, got "
                        + ",".join(str(row[c]) for c in COORDINATES)
                    ) from None
                name = (row[label] or "").strip()
                if not name and box[2] > box[0] and box[3] > box[1]:
                    raise InputError(f"{where}: a box without a {label!r} value")
                boxes, classes = per_image.setdefault(image, ([], []))
                boxes.append(box)
                classes.append(name)
    except OSError as exc:
        raise InputError(f"{labels}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{labels}: not a readable CSV file: {exc}") from None
    if missing:
        raise missing_images(labels, list(missing))
    out = LabelSet()
    for image, (boxes, classes) in per_image.items():
        out.add(image, boxes, classes)
    return out


def _check_columns(labels: Path, fields: list[str], label: str, class_field: str | None) -> None:
    there = ", ".join(fields) or "none"
    if class_field is not None and class_field not in fields:
        raise ParameterError(
            "class_field",
            f"no such column (the columns are: {there})",
            value=class_field,
            source=str(labels),
        )
    lacking = [c for c in ("image_path", *COORDINATES, label) if c not in fields]
    if lacking:
        raise InputError(
            f"{labels}: needs the columns image_path,xmin,ymin,xmax,ymax,{label}; lacks "
            f"{', '.join(lacking)} (the columns are: {there})"
        )
