"""COCO-format detection dataset over rasters of any kind rasterio reads.

Pixels go through `scalemae_det.base.pixels`, the same band choice, nodata handling and scaling to
[0, 1] that inference uses, so the network sees the same values in training and deployment.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence

import torch
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset

from scalemae_det.base.geo import gsd_m
from scalemae_det.base.pixels import open_raster, read_unit, select_bands, value_range
from scalemae_det.data.labels import ImageRecord, index_coco

Transform = Callable[[Tensor, dict], tuple[Tensor, dict]]


class CocoDetection(Dataset):
    """Images and boxes of a COCO label file, with each image's GSD.

    `dataset[i]` is `(image, target)`: image float32 (3, H, W) in [0, 1]; target `boxes`
    float32 (N, 4) xyxy pixels, `labels` int64 (N,) in 1..K, `image_id` (int, the label
    file's id) and `gsd` (float, metres): from the image's georeference, else the record's
    `gsd` field, else `default_gsd`. Images without annotations are kept as negatives.
    `bands` (1-based, 1 or 3 of them) and `scale` ("auto" or (lo, hi)) are those of inference.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        label_file: str | os.PathLike,
        *,
        transform: Transform | None = None,
        bands: Sequence[int] | None = None,
        scale: str | tuple[float, float] = "auto",
        default_gsd: float = 0.3,
    ):
        index = index_coco(image_dir, label_file)
        self.records = index.images
        self.categories = index.categories  # categories[k - 1]: file's category of label k
        self.category_ids = index.category_ids  # category_ids[k - 1]: file's id of label k
        self.class_names = index.class_names  # class_names[k - 1]: name of label k
        self.skipped = index.skipped
        self.transform, self.bands, self.scale, self.default_gsd = (
            transform,
            bands,
            scale,
            default_gsd,
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[Tensor, dict]:
        rec = self.records[i]
        image, geo_gsd = read_image(rec.path, self.bands, self.scale)
        h, w = image.shape[-2:]
        # the record's size was checked, not the file's: clip to what was actually read
        boxes = torch.from_numpy(rec.boxes).clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {
            "boxes": boxes[keep],
            "labels": torch.from_numpy(rec.labels)[keep],
            "image_id": rec.image_id,
            "gsd": self._gsd(rec, geo_gsd),
        }
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def _gsd(self, rec: ImageRecord, geo_gsd: float | None) -> float:
        return geo_gsd or rec.gsd or self.default_gsd

    def defaulted_gsd(self) -> int:
        """How many images take `default_gsd`: no `gsd` field and no georeference (read from the
        headers of the images without the field)."""
        count = 0
        for rec in self.records:
            if not rec.gsd:
                with open_raster(rec.path) as ds:
                    count += gsd_m(ds.crs, ds.transform, ds.width, ds.height) is None
        return count

    def median_gsd(self, samples: int = 64) -> float:
        """The checkpoint's GSD: median over up to `samples` evenly spread images, from their
        headers only."""
        step = max(1, len(self.records) // samples)
        values = []
        for rec in self.records[::step][:samples]:
            with open_raster(rec.path) as ds:
                values.append(self._gsd(rec, gsd_m(ds.crs, ds.transform, ds.width, ds.height)))
        return float(statistics.median(values))


def read_image(
    path: os.PathLike, bands: Sequence[int] | None = None, scale: str | tuple[float, float] = "auto"
) -> tuple[Tensor, float | None]:
    """The whole raster as model input (3, H, W) in [0, 1], and its GSD if georeferenced."""
    with open_raster(path) as ds:
        chosen = select_bands(ds, bands)
        unit, _ = read_unit(
            ds, chosen, Window(0, 0, ds.width, ds.height), value_range(ds, chosen, scale)
        )
        gsd = gsd_m(ds.crs, ds.transform, ds.width, ds.height)
    return torch.from_numpy(unit), gsd


def collate(batch: Sequence[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """Keep images and targets as lists: torchvision detectors take them so."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def batch_gsd(targets: Sequence[dict]) -> Tensor:
    """The (B,) float32 GSD tensor the model's `gsd=` argument takes."""
    return torch.tensor([float(t["gsd"]) for t in targets], dtype=torch.float32)
