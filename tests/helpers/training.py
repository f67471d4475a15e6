"""A micro training set and train.py's command line for it, shared by the training and bad-input
tests.

The micro detector (2 blocks, width 96) on generated 64-px images costs about 0.1 s a step on one
CPU thread.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

CLASSES = ("bright", "red")


# The micro detector: about 0.5 M parameters.
TINY = {
    "depth": 2,
    "global_blocks": [1],
    "embed_dim": 96,
    "num_heads": 2,
    "pyramid_dim": 32,
    "box_head_convs": 1,
    "box_head_fc": 64,
    "roi_batch_per_image": 64,
}


def overrides(extra: dict | None = None) -> list[str]:
    return [
        a
        for k, v in {**TINY, **(extra or {})}.items()
        for a in ("--override", f"{k}={json.dumps(v)}")
    ]


def write_raster(path: Path, pixels: np.ndarray, driver: str, crs=None, transform=None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver=driver,
            width=pixels.shape[2],
            height=pixels.shape[1],
            count=3,
            dtype="uint8",
            crs=crs,
            transform=transform,
        ) as dst:
            dst.write(pixels)


def make_dataset(
    root: Path, n: int, size: int = 64, fixed_layout: bool = False, seed: int = 0
) -> tuple[Path, Path]:
    """n PNG images with three rectangles each (class 1 bright, class 2 red) on noise, and their
    COCO JSON.

    `fixed_layout`: the same three boxes in every image (colours and classes still vary), so
    every image gives torchvision's samplers the same number of anchors and RoIs.
    """
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    layout = [(4, 6, 22, 18), (30, 28, 20, 26), (8, 40, 16, 14)]
    images, annotations = [], []
    for i in range(n):
        pixels = rng.integers(50, 115, (3, size, size), dtype=np.uint8)
        boxes = (
            layout
            if fixed_layout
            else [(*rng.integers(0, size - 30, 2), *rng.integers(10, 28, 2)) for _ in range(3)]
        )
        for x, y, w, h in boxes:
            label = int(rng.integers(1, 3))
            pixels[:, y : y + h, x : x + w] = np.array(
                (240, 240, 230) if label == 1 else (180, 20, 20)
            )[:, None, None]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 100 + i,
                    "category_id": label,
                    "bbox": [int(x), int(y), int(w), int(h)],
                    "area": int(w * h),
                    "iscrowd": 0,
                }
            )
        write_raster(images_dir / f"{i}.png", pixels, "PNG")
        images.append(
            {"id": 100 + i, "file_name": f"{i}.png", "width": size, "height": size, "gsd": 0.5}
        )
    labels = root / "labels.json"
    labels.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": k, "name": n} for k, n in enumerate(CLASSES, 1)],
            }
        )
    )
    return images_dir, labels


def train_args(images: Path, labels: Path, save: Path, *extra: str) -> list[str]:
    return [
        "--train_image_dir",
        str(images),
        "--train_label_file",
        str(labels),
        "--model",
        "vit_tiny_patch16",
        *overrides(),
        "--input_size",
        "64",
        "--num_workers",
        "0",
        "--save_checkpoint_path",
        str(save),
        "--warmup_steps",
        "2",
        "--learning_rate",
        "1e-3",
        *extra,
    ]
