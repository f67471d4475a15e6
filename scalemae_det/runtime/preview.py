"""A quicklook PNG: the scene decimated to a screen-sized image, detections outlined by class.

Read through scalemae_det.base.pixels, so it shows what the model saw; written with rasterio's PNG
driver.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from scalemae_det.base.atomic import atomic_path
from scalemae_det.base.pixels import read_unit
from scalemae_det.base.remote import open_path, reading
from scalemae_det.runtime.detector import SceneResult

SIDE = 1024  # longest side of the quicklook
# distinct, saturated colours, cycled over class ids
PALETTE = np.array(
    [
        [255, 64, 64],
        [64, 220, 64],
        [64, 128, 255],
        [255, 200, 0],
        [255, 64, 255],
        [0, 230, 230],
        [255, 140, 0],
        [160, 90, 255],
    ],
    np.uint8,
)


def class_colour(class_id: int) -> np.ndarray:
    """(3,) uint8 RGB of class `class_id` (1-based): the preview's and the QGIS style's colour."""
    return PALETTE[(int(class_id) - 1) % len(PALETTE)]


def quicklook(result: SceneResult, side: int = SIDE) -> np.ndarray:
    """(3, h, w) uint8 quicklook with box outlines."""
    scene = result.scene
    k = max(1.0, max(scene.width, scene.height) / side)
    h, w = max(1, round(scene.height / k)), max(1, round(scene.width / k))
    with reading(scene.path), rasterio.open(open_path(scene.path)) as ds:
        unit, _ = read_unit(ds, scene.bands, None, scene.value_range, out_shape=(h, w))
    image = np.round(unit * 255).astype(np.uint8)
    sx, sy = w / scene.width, h / scene.height
    boxes = result.detections.boxes * (sx, sy, sx, sy)
    for (x1, y1, x2, y2), label in zip(
        np.round(boxes).astype(int).tolist(), result.detections.labels.tolist()
    ):
        x1, x2 = np.clip([x1, x2], 0, w - 1)
        y1, y2 = np.clip([y1, y2], 0, h - 1)
        colour = class_colour(label)[:, None]
        image[:, y1, x1 : x2 + 1] = image[:, y2, x1 : x2 + 1] = colour
        image[:, y1 : y2 + 1, x1] = image[:, y1 : y2 + 1, x2] = colour
    return image


def write_preview(result: SceneResult, path: str | os.PathLike, side: int = SIDE) -> None:
    image = quicklook(result, side)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            tmp,
            "w",
            driver="PNG",
            width=image.shape[2],
            height=image.shape[1],
            count=3,
            dtype="uint8",
        ) as dst:
            dst.write(image)
