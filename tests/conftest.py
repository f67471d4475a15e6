"""Shared fixtures: a tiny detector checkpoint and this project's own exports of it, built once per
session, and the world the command-line tests run in.

    tiny_checkpoint           Path of a `detector_state` checkpoint (vit_tiny_patch16, 3 classes,
                              gsd 0.5 m)
    tiny_export(fmt, **spec)  export it (fmt "onnx" or "torchscript", spec: ExportSpec fields; tile
                              128 and batch 3 unless given) -> scalemae_det.export.prepare.
                              ExportResult, cached per arguments
    tiny_onnx                 tiny_export("onnx"): batch 3, tile 128, validated; `.path`,
                              `.metadata`
    world                     the inputs command lines name (helpers.commands.build_world), once
    place                     a test's own output paths (helpers.commands.make_place)

The detector is random, so it is made to detect: its class logits are scaled up (a confident
classifier) and its score threshold (the export default) is set just above the best score it
gives the blank validation tile. The blank tile then gets no detection while the busy tiles
beside it get several, which is the case batched exports must get right.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.tiny import TINY_BATCH, TINY_CLASSES, TINY_GSD, TINY_TILE, calibrated_detector


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from scalemae_det.models.weights import detector_state

    path = tmp_path_factory.mktemp("tiny") / "tiny_detector.pt"
    torch.save(detector_state(calibrated_detector(), TINY_CLASSES, TINY_GSD), path)
    return path


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_checkpoint):
    from scalemae_det.export.onnx_export import export_onnx
    from scalemae_det.export.options import ExportSpec
    from scalemae_det.export.torchscript_export import export_torchscript

    exporters = {"onnx": (export_onnx, ".onnx"), "torchscript": (export_torchscript, ".pt")}
    cache = {}

    def export(fmt: str = "onnx", **spec):
        key = (fmt, tuple(sorted(spec.items())))
        if key not in cache:
            exporter, suffix = exporters[fmt]
            out = tmp_path_factory.mktemp("export") / f"tiny{suffix}"
            cache[key] = exporter(
                tiny_checkpoint, out, ExportSpec(**{"tile": TINY_TILE, "batch": TINY_BATCH, **spec})
            )
        return cache[key]

    return export


@pytest.fixture(scope="session")
def tiny_onnx(tiny_export):
    return tiny_export("onnx", simplify=False)


@pytest.fixture(scope="session")
def world(tmp_path_factory, tiny_checkpoint) -> dict:
    from helpers.commands import build_world

    return build_world(tmp_path_factory.mktemp("world"), tiny_checkpoint)


@pytest.fixture
def place(tmp_path, monkeypatch) -> dict:
    from helpers.commands import make_place

    return make_place(tmp_path, monkeypatch)
