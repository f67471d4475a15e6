"""Augmentation that keeps boxes and GSD consistent with the pixels.

A sample is `(image, target)`: image float32 (3, H, W) in [0, 1]; target with `boxes` (N, 4)
xyxy pixels, `labels` (N,), `gsd` (metres per pixel) and any other keys, passed through.
Every resize by a factor s divides the GSD by s, so the positional embedding sees the
resolution the network actually gets (the point of ScaleMAE). Randomness comes from torch's
global generator: seeding torch (DataLoader workers seed it per worker) reproduces a run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from scalemae_det.models.detector import IMAGENET_MEAN

Sample = tuple[Tensor, dict]


@dataclass(frozen=True)
class AugmentConfig:
    input_size: int = 800  # side of the square training crop
    scale_range: tuple[float, float] = (0.1, 2.0)  # large-scale jitter, relative to native pixels
    flips: bool = True  # horizontal and vertical, each with probability 1/2
    rotations: bool = True  # 0, 90, 180 or 270 degrees, uniformly (overhead imagery has no up)
    photometric: float = 0.1  # brightness, contrast, saturation each scaled by 1 +- this at most
    # Each band scaled by its own factor, 1 +- this at most: a shift in colour balance between
    # scenes (another flight, sun or sensor), which the three shared factors above cannot make.
    # Off by default; measured on real crops in docs/benchmarks-real.md.
    band_gain: float = 0.0
    # A cropped box is kept when at least min_box_size px of its width and of its height are left
    # (and min_visible of its area, off by default). ViTDet keeps any non-empty box; dropping the
    # boxes under half visible (as this did) trained cut objects as background.
    min_visible: float = 0.0
    min_box_size: float = 2.0


def _geometric(op, image: Tensor, target: dict, *args, **kwargs) -> Sample:
    """Apply a torchvision v2 functional op to the image and, through tv_tensors, its boxes."""
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=image.shape[-2:])
    out_image = op(tv_tensors.Image(image), *args, **kwargs).as_subclass(Tensor)
    out_boxes = op(boxes, *args, **kwargs).as_subclass(Tensor)
    return out_image, {**target, "boxes": out_boxes}


def hflip(image: Tensor, target: dict) -> Sample:
    return _geometric(F.horizontal_flip, image, target)


def vflip(image: Tensor, target: dict) -> Sample:
    return _geometric(F.vertical_flip, image, target)


def rotate90(image: Tensor, target: dict, k: int) -> Sample:
    """Rotate by k quarter turns counter-clockwise (exact: no resampling)."""
    return _geometric(F.rotate, image, target, 90 * (k % 4), expand=True)


def resize(image: Tensor, target: dict, size: tuple[int, int]) -> Sample:
    """Resize to (h, w); the GSD follows the change in pixel area, gsd / sqrt(fx * fy)."""
    h, w = image.shape[-2:]
    fx, fy = size[1] / w, size[0] / h
    image, target = _geometric(F.resize, image, target, list(size), antialias=True)
    return image, {**target, "gsd": target["gsd"] / math.sqrt(fx * fy)}


def scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    return max(1, round(h * scale)), max(1, round(w * scale))


def crop(
    image: Tensor,
    target: dict,
    top: int,
    left: int,
    size: int,
    min_visible: float,
    min_box_size: float,
    fill: Sequence[float] | None = None,
) -> Sample:
    """A size x size window at (top, left) (both >= 0), padded where it passes the image's edge
    with `fill` (one value per channel; None: zero).

    Boxes are clipped to the window; a box is dropped when less than `min_visible` of its
    area, or less than `min_box_size` pixels of its width or height, is left.
    """
    before = target["boxes"]
    h, w = image.shape[-2:]
    image, target = _geometric(F.crop, image, target, top, left, size, size)
    if fill is not None:
        colour = torch.tensor(fill, dtype=image.dtype).view(-1, 1, 1)
        image[:, max(0, h - top) :] = colour
        image[:, :, max(0, w - left) :] = colour
    after = target["boxes"]
    wh = after[:, 2:] - after[:, :2]
    area_before = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1])
    keep = (wh >= min_box_size).all(dim=1) & (wh.prod(dim=1) >= min_visible * area_before)
    return image, {**target, "boxes": after[keep], "labels": target["labels"][keep]}


def photometric(image: Tensor, brightness: float, contrast: float, saturation: float) -> Tensor:
    """Scale brightness, contrast and saturation by the given factors (1 = unchanged)."""
    image = F.adjust_brightness(image, brightness)
    image = F.adjust_contrast(image, contrast)
    return F.adjust_saturation(image, saturation)


def band_gains(image: Tensor, gains: Tensor) -> Tensor:
    """Scale band k by gains[k], clipped to [0, 1] as the photometric ops clip."""
    return (image * gains.to(image.dtype)[:, None, None]).clamp(0, 1)


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand(()).item()


class TrainTransform:
    """Photometric jitter, band gains, flips, quarter turns, then large-scale jitter to a square
    crop.

    Large-scale jitter resizes by s ~ U(scale_range) relative to the native pixels (so the
    GSD range seen in training is gsd/2 .. gsd*10 for the default range), then takes a random
    input_size crop, padded at the bottom/right when the image is smaller with the mean colour
    (0 after normalisation), as ViTDet's LSJ does: shrunk images leave most of the crop padding,
    and black there would be a large artificial edge the backbone learns from.
    """

    def __init__(self, cfg: AugmentConfig = AugmentConfig()):
        self.cfg = cfg

    def __call__(self, image: Tensor, target: dict) -> Sample:
        cfg = self.cfg
        if cfg.photometric > 0:
            lo, hi = 1 - cfg.photometric, 1 + cfg.photometric
            image = photometric(image, _uniform(lo, hi), _uniform(lo, hi), _uniform(lo, hi))
        if cfg.band_gain > 0:
            image = band_gains(image, 1 + cfg.band_gain * (2 * torch.rand(image.shape[0]) - 1))
        if cfg.flips:
            if torch.rand(()) < 0.5:
                image, target = hflip(image, target)
            if torch.rand(()) < 0.5:
                image, target = vflip(image, target)
        if cfg.rotations:
            image, target = rotate90(image, target, int(torch.randint(4, ())))
        h, w = image.shape[-2:]
        image, target = resize(image, target, scaled_size(h, w, _uniform(*cfg.scale_range)))
        h, w = image.shape[-2:]
        top = int(torch.randint(h - cfg.input_size + 1, ())) if h > cfg.input_size else 0
        left = int(torch.randint(w - cfg.input_size + 1, ())) if w > cfg.input_size else 0
        return crop(
            image,
            target,
            top,
            left,
            cfg.input_size,
            cfg.min_visible,
            cfg.min_box_size,
            IMAGENET_MEAN,
        )


class EvalTransform:
    """No augmentation: shrink to fit input_size when larger (GSD updated), pad to a square.

    Sets `target["box_scale"]` (fx, fy, fx, fy), what boxes were multiplied by, so that
    detections can be mapped back to the original pixels (`metrics.coco_ap.detections_to_coco`).
    Images are never enlarged: one smaller than input_size is padded at its own GSD.
    """

    def __init__(self, input_size: int = 800):
        self.input_size = input_size

    def __call__(self, image: Tensor, target: dict) -> Sample:
        h, w = image.shape[-2:]
        fx = fy = 1.0
        if max(h, w) > self.input_size:
            nh, nw = scaled_size(h, w, self.input_size / max(h, w))
            image, target = resize(image, target, (nh, nw))
            fx, fy = nw / w, nh / h
        image, target = crop(image, target, 0, 0, self.input_size, min_visible=0, min_box_size=0)
        return image, {**target, "box_scale": torch.tensor([fx, fy, fx, fy])}
