"""The tiny detector the export and runtime tests share, made to detect.

Its weights are random, so its class logits are scaled up (a confident classifier) and its score
threshold is set just above the best score it gives the blank validation tile: the blank tile then
gets no detection while the busy tiles beside it get several, which is the case batched exports
must get right.
"""

from __future__ import annotations

import torch

TINY_CLASSES = ["vehicle", "building", "ship"]
TINY_GSD = 0.5
TINY_TILE = 128
TINY_BATCH = 3
_SEEDS, _LOGIT_SCALE, _MARGIN = 20, 8.0, 0.01
_MIN_BUSY = 5  # detections each busy validation tile must get for the tests to mean something


def calibrated_detector(init=None, **overrides):
    """The first of a few seeds whose detector, logits scaled, puts several busy-tile detections
    above the
    blank tile's best score (seeds are tried, not fixed, so that a change of the tiny config keeps
    this working).

    `overrides` change the tiny config; `init(model)` changes the weights of each candidate (seeded)
    first."""
    from scalemae_det.export.parity import BLANK_INDEX, run_reference, validation_tiles
    from scalemae_det.models.detector import build_detector

    tiles = validation_tiles(TINY_TILE, TINY_BATCH)
    for seed in range(_SEEDS):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build_detector("vit_tiny_patch16", len(TINY_CLASSES), **overrides).eval()
            if init is not None:
                init(model)
        with torch.no_grad():
            model.roi_heads.box_predictor.cls_score.weight.mul_(_LOGIT_SCALE)
        model.roi_heads.score_thresh = 0.0
        dets = run_reference(model, tiles, TINY_BATCH, TINY_GSD)
        threshold = round(float(dets[BLANK_INDEX].scores.max()) + _MARGIN, 4)
        busy = [int((d.scores > threshold).sum()) for i, d in enumerate(dets) if i != BLANK_INDEX]
        if min(busy) >= _MIN_BUSY and max(busy) < model.config.detections_per_image:
            model.config = model.config.with_overrides(score_thresh=threshold)
            model.roi_heads.score_thresh = threshold
            return model
    raise AssertionError(
        f"no seed below {_SEEDS} gives a tiny detector with {_MIN_BUSY}+ detections per busy tile"
    )
