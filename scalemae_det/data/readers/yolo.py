"""YOLO txt labels: a folder of one `<image stem>.txt` per image, class names in classes.txt or a
data.yaml.

The format Ultralytics documents (docs.ultralytics.com/datasets/detect/, "Ultralytics YOLO
format"): one object per line, `class x_center y_center width height`, the class a 0-based index
into the names and the four numbers normalised by the image's width and height. A line of a class
and three or more x y pairs is a segment outline (Ultralytics' segmentation format): its box is
the outline's bounding box.

1. Names: classes.txt (one name a line, Darknet's and LabelImg's) or data.yaml (`names:`, a list or
   an index -> name mapping), in the labels folder or the two above it, the nearest first; the
   class order is theirs.
2. Each txt file's image is the one image of its stem among the images given; a txt file of no
   image is an error listing them all. An image without a txt file has no objects (Ultralytics'
   rule for background images).
3. A malformed line (wrong count, not numbers, a class id out of range, values outside [0, 1]) is
   an error naming the file and line; boxes of zero size are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

from scalemae_det.base.errors import InputError
from scalemae_det.data.readers import ImageIndex, LabelSet, missing_images

NAME_FILES = ("classes.txt", "data.yaml")
_SLACK = 1e-6  # rounding in tools that write six decimals


def read_yolo(labels: Path, index: ImageIndex) -> LabelSet:
    """Boxes per image of a YOLO folder (the module doc's rules)."""
    names = class_names(labels)
    out, missing = LabelSet(class_order=names), []
    for path in sorted(p for p in labels.iterdir() if p.suffix == ".txt" and p.is_file()):
        if path.name == "classes.txt":
            continue
        image = index.find_stem(path.stem, str(path))
        if image is None:
            missing.append(path.stem + ".*")
            continue
        boxes, classes = [], []
        for number, line in enumerate(_lines(path), 1):
            if line.strip():
                cls, box = _parse(line, path, number, len(names))
                boxes.append(
                    (box[0] * image.width, box[1] * image.height)
                    + (box[2] * image.width, box[3] * image.height)
                )
                classes.append(names[cls])
        out.add(image, boxes, classes)
    if missing:
        raise missing_images(labels, missing)
    for header in index.headers:
        if header.path not in out.boxes:
            out.add(header, [], [])  # rule 2: a background image
    return out


def class_names(labels: Path) -> list[str]:
    """The class names of a YOLO folder (rule 1)."""
    for folder in (labels, *list(labels.resolve().parents)[:2]):
        for name in NAME_FILES:
            path = folder / name
            if path.is_file():
                names = _names_txt(path) if name.endswith(".txt") else _names_yaml(path)
                if not names:
                    raise InputError(f"{path}: lists no class names")
                return names
    raise InputError(
        f"{labels}: YOLO labels need their class names: no classes.txt or data.yaml there "
        "or in the two folders above"
    )


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file: {exc}") from None


def _names_txt(path: Path) -> list[str]:
    return [n.strip() for n in _lines(path) if n.strip()]


def _names_yaml(path: Path) -> list[str]:
    try:
        import yaml
    except ImportError:
        raise InputError(f"{path}: reading data.yaml needs PyYAML: pip install pyyaml") from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not a readable YAML file: {exc}".splitlines()[0]) from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise InputError(f"{path}: `names` must map the ids 0..{len(names) - 1} to names")
        return [str(names[k]) for k in range(len(names))]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise InputError(f"{path}: no `names` list or mapping")


def _parse(line: str, path: Path, number: int, n_classes: int) -> tuple[int, tuple]:
    """(class id, xyxy normalised) of one line (rule 3)."""
    where = f"{path}: line {number}"
    parts = line.split()
    try:
        cls, values = int(parts[0]), [float(v) for v in parts[1:]]
    except ValueError:
        raise InputError(
            f"{where}: expected a class id and numbers, got {line.strip()!r}"
        ) from None
    if not 0 <= cls < n_classes:
        raise InputError(f"{where}: class id {cls} is not one of the {n_classes} names (0-based)")
    if len(values) == 4:
        cx, cy, w, h = values
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        checked = values
    elif len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        box = (min(xs), min(ys), max(xs), max(ys))
        checked = values
    else:
        raise InputError(
            f"{where}: expected `class x_center y_center width height` (or a class and x y "
            f"pairs of an outline), got {len(parts)} values"
        )
    if not all(-_SLACK <= v <= 1 + _SLACK for v in checked):
        raise InputError(f"{where}: values must be normalised to [0, 1], got {line.strip()!r}")
    return cls, box
