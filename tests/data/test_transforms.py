"""Augmentation: boxes stay on their objects and the GSD follows every resize."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from scalemae_det.data.coco import collate
from scalemae_det.data.transforms import (
    AugmentConfig,
    EvalTransform,
    TrainTransform,
    crop,
    hflip,
    resize,
    rotate90,
    vflip,
)


def _scene(h, w, rects, gsd=0.5):
    """A dark image with one bright rectangle per box (integer pixel edges), box i bright in
    channel i only, so that objects stay apart however much they are shrunk."""
    image = torch.full((3, h, w), 0.1)
    for i, (x0, y0, x1, y1) in enumerate(rects):
        image[i, y0:y1, x0:x1] = 0.9
    target = {
        "boxes": torch.tensor(rects, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.arange(1, len(rects) + 1),
        "image_id": 7,
        "gsd": gsd,
    }
    return image, target


def _bright_extent(image, box, label, margin=2):
    """xyxy extent of object `label`'s bright pixels near `box` (grown by `margin`), or None."""
    x0, y0, x1, y1 = box.tolist()
    h, w = image.shape[-2:]
    r0, r1 = max(0, math.floor(y0) - margin), min(h, math.ceil(y1) + margin)
    c0, c1 = max(0, math.floor(x0) - margin), min(w, math.ceil(x1) + margin)
    ys, xs = torch.nonzero(image[label - 1, r0:r1, c0:c1] > 0.5, as_tuple=True)
    if not len(ys):
        return None
    return torch.tensor(
        [xs.min() + c0, ys.min() + r0, xs.max() + c0 + 1, ys.max() + r0 + 1], dtype=torch.float32
    )


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [None, hflip, vflip])
def test_flips_and_quarter_turns_keep_boxes_on_objects(k, flip):
    image, target = _scene(30, 50, [(3, 4, 12, 9), (30, 10, 47, 28)])
    if flip:
        image, target = flip(image, target)
    image, target = rotate90(image, target, k)
    assert image.shape[-2:] == ((50, 30) if k % 2 else (30, 50))
    assert target["gsd"] == 0.5 and target["labels"].tolist() == [1, 2]
    for box, label in zip(target["boxes"], target["labels"].tolist()):
        assert torch.equal(_bright_extent(image, box, label), box)  # no resampling: exact
    assert (image[0] > 0.5).sum() == 9 * 5 and (image[1] > 0.5).sum() == 17 * 18


@pytest.mark.parametrize("scale", [0.5, 1.5, 2.0])
def test_lsj_divides_gsd_by_the_scale_exactly(scale):
    # 40x60 scaled by 0.5, 1.5 or 2 gives whole pixel sizes, so the resize factor is exactly s
    image, target = _scene(40, 60, [(10, 10, 30, 20)], gsd=0.3)
    cfg = AugmentConfig(
        input_size=64, scale_range=(scale, scale), flips=False, rotations=False, photometric=0
    )
    torch.manual_seed(0)
    out_image, out = TrainTransform(cfg)(image, target)
    assert out_image.shape == (3, 64, 64)
    assert out["gsd"] == 0.3 / scale


def test_resize_gsd_follows_the_pixel_area():
    image, target = _scene(40, 60, [(10, 10, 30, 20)], gsd=1.0)
    out_image, out = resize(image, target, (30, 90))  # fy = 0.75, fx = 1.5
    assert out["gsd"] == pytest.approx(1 / math.sqrt(0.75 * 1.5), rel=1e-12)
    assert torch.allclose(out["boxes"], torch.tensor([[15.0, 7.5, 45.0, 15.0]]))
    assert out_image.shape == (3, 30, 90)


@pytest.mark.parametrize("seed", range(40))
def test_lsj_boxes_follow_the_image(seed):
    """After random flips, turns, jitter and crop, each kept box encloses its bright object,
    the object has grown by the same factor the GSD shrank, and dropped boxes are mostly gone."""
    rects = [(8, 6, 40, 30), (50, 44, 78, 70), (0, 60, 20, 80)]
    image, target = _scene(80, 96, rects, gsd=0.3)
    cfg = AugmentConfig(
        input_size=72, photometric=0.1, min_visible=0.5, min_box_size=1.0
    )  # the area rule
    torch.manual_seed(seed)
    out_image, out = TrainTransform(cfg)(image, target)
    assert out_image.shape == (3, 72, 72) and out_image.dtype == torch.float32
    s = 0.3 / out["gsd"]  # the resize factor, as the GSD reports it
    assert 0.1 * 0.95 <= s <= 2.0 * 1.05
    areas = {label: (r[2] - r[0]) * (r[3] - r[1]) for label, r in zip((1, 2, 3), rects)}
    for box, label in zip(out["boxes"], out["labels"].tolist()):
        extent = _bright_extent(out_image, box, label)
        assert extent is not None
        # bilinear edges: the bright (> 0.5) pixels lie within a pixel of the box's edges
        assert (extent[:2] >= box[:2] - 1).all() and (extent[2:] <= box[2:] + 1).all()
        assert (extent[:2] <= box[:2] + 1).all() and (extent[2:] >= box[2:] - 1).all()
        # kept boxes keep at least half of the scaled object
        bw, bh = (box[2:] - box[:2]).tolist()
        assert bw >= 1 and bh >= 1 and bw * bh >= 0.5 * areas[label] * s * s * 0.9 - 2
    for label in set(areas) - set(out["labels"].tolist()):
        # a dropped object has under half of itself left in the crop (give or take its edges)
        bright = (out_image[label - 1] > 0.5).sum().item()
        side = math.sqrt(areas[label]) * s
        assert bright <= 0.5 * areas[label] * s * s + 4 * side + 4


def test_train_transform_is_reproducible_from_the_torch_seed():
    image, target = _scene(80, 96, [(8, 6, 40, 30)])
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        outs.append(TrainTransform(AugmentConfig(input_size=64))(image, target))
    assert torch.equal(outs[0][0], outs[1][0]) and outs[0][1]["gsd"] == outs[1][1]["gsd"]
    assert outs[0][1]["gsd"] != outs[2][1]["gsd"]


def test_band_gain_scales_each_band_by_its_own_factor_within_the_range():
    """Only band gains on: each band of a flat image comes out flat, times a factor of its own in
    1 +- band_gain; over many draws the factors fill the range and the bands vary independently."""
    image = torch.stack([torch.full((32, 32), v) for v in (0.2, 0.4, 0.6)])
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "gsd": 1.0}
    still = dict(photometric=0.0, flips=False, rotations=False, scale_range=(1.0, 1.0))
    torch.manual_seed(0)
    plain, _ = TrainTransform(AugmentConfig(input_size=32, **still))(image, target)
    assert torch.allclose(plain, image)
    transform = TrainTransform(AugmentConfig(input_size=32, band_gain=0.25, **still))
    gains = []
    for _ in range(300):
        out, _ = transform(image, target)
        per_band = out.flatten(1)
        assert torch.allclose(per_band, per_band[:, :1].expand_as(per_band))  # one factor a band
        gains.append(per_band[:, 0] / image[:, 0, 0])
    gains = torch.stack(gains)
    assert gains.min() >= 0.75 - 1e-6 and gains.max() <= 1.25 + 1e-6
    assert gains.min() < 0.77 and gains.max() > 1.23
    assert abs(torch.corrcoef(gains.T)[0, 1]) < 0.2  # not one shared brightness factor


class _Synthetic(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return TrainTransform(AugmentConfig(input_size=48))(*_scene(60, 60, [(5, 5, 30, 30)]))


def test_dataloader_workers_reproduce_a_run():
    def run():
        loader = DataLoader(
            _Synthetic(),
            batch_size=2,
            num_workers=2,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(11),
        )
        return [(torch.stack(imgs), [t["gsd"] for t in tgts]) for imgs, tgts in loader]

    a, b = run(), run()
    assert all(torch.equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b))
    assert len({g for _, gsds in a for g in gsds}) > 1  # samples differ from each other


def test_eval_transform_shrinks_large_images_and_pads_small_ones():
    image, target = _scene(200, 100, [(10, 20, 50, 120)], gsd=0.3)
    out_image, out = EvalTransform(64)(image, target)
    assert out_image.shape == (3, 64, 64)
    assert out["gsd"] == pytest.approx(0.3 / 0.32)  # 200x100 -> 64x32
    assert torch.allclose(out["boxes"], torch.tensor([[3.2, 6.4, 16.0, 38.4]]))
    assert torch.allclose(out["box_scale"], torch.tensor([0.32, 0.32, 0.32, 0.32]))
    assert (out_image[:, :, 32:] == 0).all()  # padding
    assert torch.allclose(out["boxes"] / out["box_scale"], target["boxes"])

    image, target = _scene(40, 30, [(1, 2, 20, 30)], gsd=0.3)
    out_image, out = EvalTransform(64)(image, target)
    assert out["gsd"] == 0.3 and torch.equal(out["boxes"], target["boxes"])
    assert torch.equal(out_image[:, :40, :30], image) and (out_image[:, 40:] == 0).all()


def test_crop_clips_boxes_and_drops_mostly_outside_ones():
    # window x 20..60, y 0..40; box 1 has 6/10 of its width inside, box 2 only 4/10
    image, target = _scene(40, 100, [(16, 5, 26, 15), (56, 5, 66, 15)])
    out_image, out = crop(image, target, 0, 20, 40, min_visible=0.5, min_box_size=1)
    assert out["labels"].tolist() == [1]
    assert torch.equal(out["boxes"], torch.tensor([[0.0, 5.0, 6.0, 15.0]]))
    assert torch.equal(_bright_extent(out_image, out["boxes"][0], 1), out["boxes"][0])


def test_lsj_pads_with_the_mean_colour_and_keeps_boxes_two_px_visible():
    """ViTDet's LSJ: padding is the mean colour (zero once normalised), and any box with 2+ px left
    is kept."""
    from scalemae_det.models.detector import IMAGENET_MEAN, IMAGENET_STD

    image, target = _scene(40, 30, [(1, 2, 20, 30), (26, 30, 30, 38)])
    torch.manual_seed(0)
    cfg = AugmentConfig(
        input_size=64, scale_range=(1.0, 1.0), flips=False, rotations=False, photometric=0
    )
    out_image, out = TrainTransform(cfg)(image, target)
    assert torch.equal(out_image[:, :40, :30], image)  # smaller than the crop: placed at (0, 0)
    normalised = (out_image - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(3, 1, 1)
    assert normalised[:, 40:].abs().max() < 1e-6 and normalised[:, :, 30:].abs().max() < 1e-6
    # a window through box 1 leaving 3 of its 19 px of width (16%): kept, clipped, as ViTDet keeps
    # it
    _, cut = crop(image, target, 0, 17, 13, cfg.min_visible, cfg.min_box_size)
    assert cut["labels"].tolist() == [1] and torch.equal(
        cut["boxes"], torch.tensor([[0.0, 2.0, 3.0, 13.0]])
    )
    # ... and one leaving 1 px is not
    _, cut = crop(image, target, 0, 19, 7, cfg.min_visible, cfg.min_box_size)
    assert cut["labels"].tolist() == []
