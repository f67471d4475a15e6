"""COCO JSON of whole images, to be chipped: the `images`, `annotations` and `categories` of the
COCO data format (cocodataset.org/#format-data, "Object Detection"), boxes `bbox` [x, y, width,
height] in pixels.

1. Each image record's `file_name` must be among the images given (relative to the JSON's folder
   or an images folder, or by file name); the missing ones are listed in one error. A record's
   `width` and `height`, when given, must match the image's.
2. Classes are the category names, in category id order.
3. Annotations of an unknown image or category, or with a malformed `bbox`, are skipped and
   counted; so are crowd regions (`iscrowd` 1, not objects); boxes of zero or negative size are
   skipped and counted.
"""

from __future__ import annotations

import math
from pathlib import Path

from scalemae_det.base.errors import InputError
from scalemae_det.data.labels import read_coco_json
from scalemae_det.data.readers import ImageIndex, LabelSet, missing_images


def read_coco_images(labels: Path, index: ImageIndex) -> LabelSet:
    """Boxes per image of a COCO file (the module doc's rules)."""
    data = read_coco_json(labels)
    cats = {}
    for c in data["categories"]:
        if isinstance(c, dict) and isinstance(c.get("id"), int):
            cats.setdefault(c["id"], str(c.get("name", c["id"])))
    if not cats:
        raise InputError(f"{labels}: no categories")
    images, missing = {}, []
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
            raise InputError(f"{labels}: image record {k} has no file_name")
        image = index.find(img["file_name"], labels.parent, str(labels))
        if image is None:
            missing.append(img["file_name"])
            continue
        w, h = img.get("width"), img.get("height")
        if isinstance(w, int | float) and isinstance(h, int | float) and w and h:
            if (round(w), round(h)) != (image.width, image.height):
                raise InputError(
                    f"{labels}: image {img['file_name']} is {w} x {h} in the labels but "
                    f"{image.path} is {image.width} x {image.height}"
                )
        images[img.get("id")] = (image, [], [])
    if missing:
        raise missing_images(labels, missing)
    out = LabelSet(class_order=[cats[i] for i in sorted(cats)])
    for ann in data.get("annotations", []):
        if not isinstance(ann, dict):
            out.skipped["malformed annotation(s)"] += 1
            continue
        if ann.get("iscrowd", 0):
            out.skipped["crowd region(s) (iscrowd, not objects)"] += 1
            continue
        target, cat = images.get(ann.get("image_id")), cats.get(ann.get("category_id"))
        box = ann.get("bbox")
        if target is None or cat is None:
            out.skipped["annotation(s) of an unknown image or category"] += 1
        elif not _numbers(box):
            out.skipped["annotation(s) with a malformed bbox"] += 1
        else:
            x, y, bw, bh = (float(v) for v in box)
            target[1].append((x, y, x + bw, y + bh))
            target[2].append(cat)
    for image, boxes, classes in images.values():
        out.add(image, boxes, classes)
    return out


def _numbers(box) -> bool:
    return (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
        and all(math.isfinite(v) for v in box)
    )
