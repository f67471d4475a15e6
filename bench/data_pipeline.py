"""Throughput of the data side: prepare-xview chipping and the training sample pipeline.

    .venv/bin/python -m bench.data_pipeline [--scenes 2] [--samples 40]

Generates xView-like scenes (3000 px, uint8 RGB, EPSG:4326, ~300 boxes each) in a temporary
folder, times `prepare_xview` on them, then times `CocoDetection` + `TrainTransform` (800 px,
one process, one thread) and `EvalTransform` over the chips. Prints the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from scalemae_det.data.chipping import ChipConfig
from scalemae_det.data.coco import CocoDetection
from scalemae_det.data.readers.xview import XVIEW_CLASSES, prepare_xview
from scalemae_det.data.transforms import AugmentConfig, EvalTransform, TrainTransform

SIDE = 3000


def make_xview(root: Path, n_scenes: int, rng: np.random.Generator) -> Path:
    (root / "images").mkdir()
    features = []
    for i in range(n_scenes):
        name = f"{i + 1}.tif"
        with rasterio.open(
            root / "images" / name,
            "w",
            driver="GTiff",
            width=SIDE,
            height=SIDE,
            count=3,
            dtype="uint8",
            crs="EPSG:4326",
            transform=from_origin(30, 10, 2.7e-6, 2.7e-6),
        ) as dst:
            # smooth-ish content so compression sees realistic work
            small = rng.integers(0, 256, (3, SIDE // 10, SIDE // 10), dtype=np.uint8)
            dst.write(np.repeat(np.repeat(small, 10, axis=1), 10, axis=2))
        for _ in range(300):
            w, h = rng.integers(8, 80, 2)
            x, y = rng.integers(0, SIDE - 80, 2)
            features.append(
                {
                    "type": "Feature",
                    "geometry": None,
                    "properties": {
                        "image_id": name,
                        "type_id": int(rng.choice(list(XVIEW_CLASSES))),
                        "bounds_imcoords": f"{x},{y},{x + w},{y + h}",
                    },
                }
            )
    geojson = root / "labels.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return geojson


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        geojson = make_xview(root, args.scenes, rng)
        start = time.perf_counter()
        counts = prepare_xview(
            geojson,
            root / "images",
            root / "out",
            cfg=ChipConfig(),
            val_fraction=0.5,
            progress=False,
        )
        seconds = time.perf_counter() - start
        chips = sum(counts["chips"].values())
        print(
            f"prepare-xview: {args.scenes} scenes of {SIDE}x{SIDE} -> {chips} chips of 800 px in "
            f"{seconds:.2f} s ({args.scenes / seconds:.2f} scenes/s, {chips / seconds:.1f} chips/s)"
        )

        train = CocoDetection(
            root / "out" / "train",
            root / "out" / "train.json",
            transform=TrainTransform(AugmentConfig(input_size=800)),
        )
        plain = CocoDetection(root / "out" / "train", root / "out" / "train.json")
        evaluate = CocoDetection(
            root / "out" / "train", root / "out" / "train.json", transform=EvalTransform(800)
        )
        torch.manual_seed(0)
        for name, ds in (
            ("read only", plain),
            ("read + train augmentation", train),
            ("read + eval transform", evaluate),
        ):
            r = rate(lambda i, ds=ds: ds[i % len(ds)], args.samples)
            print(f"{name:>26}: {r:6.1f} samples/s (one process, one thread, 800 px uint8 chips)")


if __name__ == "__main__":
    main()
