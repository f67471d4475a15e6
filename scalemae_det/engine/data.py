"""The training and validation data as train.py and `evaluate` use them.

Scoring uses the dataset's indexed labels (`indexed_coco`), not the raw label file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scalemae_det.base.errors import InputError
from scalemae_det.data.coco import CocoDetection, Transform
from scalemae_det.data.labels import indexed_coco
from scalemae_det.data.transforms import AugmentConfig, EvalTransform, TrainTransform

log = logging.getLogger(__name__)


@dataclass
class DataSplit:
    dataset: CocoDetection
    class_names: list[str]  # of the model's labels 1..K
    category_ids: list[int]  # category_ids[k - 1]: this label file's id for the model's label k
    coco: dict  # ground truth for scoring


def train_transform(
    input_size: int,
    scale_range: tuple[float, float] | None,
    min_visible_px: float = AugmentConfig.min_box_size,
    photometric: float = AugmentConfig.photometric,
    band_gain: float = AugmentConfig.band_gain,
) -> Transform:
    """Augmentation with large-scale jitter over `scale_range`; None: no augmentation at all.

    A box cut by the crop is kept when at least `min_visible_px` of its width and height are left;
    `photometric` and `band_gain` are AugmentConfig's.
    """
    if scale_range is None:
        return EvalTransform(input_size)
    return TrainTransform(
        AugmentConfig(
            input_size=input_size,
            scale_range=tuple(scale_range),
            min_box_size=min_visible_px,
            photometric=photometric,
            band_gain=band_gain,
        )
    )


def load_split(
    image_dir: Path,
    label_file: Path,
    *,
    transform: Transform,
    default_gsd: float,
    bands: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> DataSplit:
    """The dataset of `label_file` with `transform`.

    `class_names`: the model's classes, when they come from elsewhere (the training set, a
    checkpoint); each must be a category name of `label_file`.
    """
    ds = CocoDetection(
        image_dir, label_file, transform=transform, bands=bands, default_gsd=default_gsd
    )
    names = list(class_names) if class_names is not None else ds.class_names
    ids = category_ids_by_name(names, ds, label_file)
    return DataSplit(ds, names, ids, scoring_labels(ds, ids, label_file))


def scoring_labels(ds: CocoDetection, category_ids: Sequence[int], label_file: Path) -> dict:
    """The ground truth to score against, limited to the model's categories.

    A category the model was not trained on can only be missed; scoring it would pull every mean
    down.
    """
    coco = indexed_coco(ds.records, ds.categories)
    keep = set(category_ids)
    extra = [c["name"] for c in coco["categories"] if c["id"] not in keep]
    if extra:
        log.warning(
            f"warning: {label_file}: not scoring {len(extra)} "
            f"categor{'y' if len(extra) == 1 else 'ies'} "
            f"the model does not have: {', '.join(extra)}"
        )
    coco["categories"] = [c for c in coco["categories"] if c["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] in keep]
    return coco


def category_ids_by_name(
    class_names: Sequence[str], ds: CocoDetection, label_file: Path
) -> list[int]:
    by_name = dict(zip(ds.class_names, ds.category_ids))
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise InputError(
            f"{label_file}: no category named {', '.join(map(repr, missing))} "
            f"(the model's classes are {', '.join(class_names)})"
        )
    return [by_name[n] for n in class_names]
