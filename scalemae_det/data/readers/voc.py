"""Pascal VOC XML labels: one `<annotation>` file per image, a file or a folder of them.

The format of the PASCAL VOC devkit (Everingham et al., "The PASCAL Visual Object Classes
Challenge", IJCV 2010; devkit doc section "Annotation"), which LabelImg, CVAT and Label Studio
export: `<filename>` names the image, `<size>` gives its width and height, each `<object>` has a
`<name>` (the class) and a `<bndbox>` of xmin, ymin, xmax, ymax in pixels. Coordinates are taken as
pixel edges, as torchvision's and DeepForest's VOC readers take them (no 1-based shift); CVAT's
fractional values are kept.

1. The image is the one `<filename>` names among the images given (relative to the XML's folder or
   an images folder, else by file name); failing that, the one `<path>` names; else it is missing,
   and every missing image is listed in one error.
2. A `<size>` that is given (non-zero) must match the image's: boxes drawn on another size would
   land in the wrong place.
3. An object without a name or a full numeric `<bndbox>` is an error naming the file; boxes of zero
   or negative size are skipped and counted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from scalemae_det.base.errors import InputError
from scalemae_det.data.readers import ImageIndex, LabelSet, missing_images


def voc_files(labels: Path) -> list[Path]:
    """The XML files of a VOC label file or folder, in name order."""
    if labels.is_dir():
        return sorted(p for p in labels.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
    return [labels]


def read_voc(labels: Path, index: ImageIndex) -> LabelSet:
    """Boxes per image of a VOC file or folder (the module doc's rules)."""
    out, missing = LabelSet(), []
    for path in voc_files(labels):
        root = _parse(path)
        refs = [_text(root, "filename"), _text(root, "path")]
        image = None
        for ref in refs:
            if ref and image is None:
                image = index.find(ref, path.parent, str(path))
        if image is None:
            missing.append(refs[0] or refs[1] or f"(no <filename> in {path.name})")
            continue
        _check_size(root, path, image)
        boxes, classes = [], []
        for k, obj in enumerate(root.iter("object"), 1):
            name = _text(obj, "name")
            box = obj.find("bndbox")
            tags = ("xmin", "ymin", "xmax", "ymax") if box is not None else ()
            values = [_number(box, tag) for tag in tags]
            if not name or len(values) != 4 or None in values:
                raise InputError(
                    f"{path}: object {k} needs a <name> and a <bndbox> with numeric "
                    "xmin, ymin, xmax, ymax"
                )
            boxes.append(values)
            classes.append(name)
        out.add(image, boxes, classes)
    if missing:
        raise missing_images(labels, missing)
    return out


def _parse(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ET.ParseError as exc:
        raise InputError(f"{path}: not an XML file: {exc}") from None
    if root.tag != "annotation":
        raise InputError(
            f"{path}: not a Pascal VOC annotation (root element <{root.tag}>, not <annotation>)"
        )
    return root


def _text(node: ET.Element, tag: str) -> str:
    child = node.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _number(node: ET.Element, tag: str) -> float | None:
    try:
        return float(_text(node, tag))
    except ValueError:
        return None


def _check_size(root: ET.Element, path: Path, image) -> None:
    size = root.find("size")
    if size is None:
        return
    w, h = _number(size, "width"), _number(size, "height")
    if w and h and (round(w), round(h)) != (image.width, image.height):
        raise InputError(
            f"{path}: <size> is {w:g} x {h:g} but {image.path} is {image.width} x {image.height}; "
            "its boxes were drawn on another image"
        )
