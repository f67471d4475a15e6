"""Shrink a training checkpoint to what inference needs: weights in half precision, config, classes,
GSD.

    .venv/bin/python scripts/slim_checkpoint.py run/checkpoint.pth
    scalemae_det/assets/vit_tiny_synthetic.pth

`load_detector` casts the weights back to float32 on load, so the bundled model stays a few MB.
"""

import sys

import torch

from scalemae_det.base.atomic import atomic_path
from scalemae_det.cli import report_user_errors
from scalemae_det.models.weights import read_detector_checkpoint

KEEP = ("format", "config", "class_names", "gsd", "category_ids")


def main(src: str, dst: str) -> None:
    ckpt = read_detector_checkpoint(src)
    slim = {k: ckpt[k] for k in KEEP if k in ckpt}
    slim["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    with atomic_path(dst) as tmp:
        torch.save(slim, tmp)


if __name__ == "__main__":
    report_user_errors(main, *sys.argv[1:])
