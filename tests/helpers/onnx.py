"""Running an exported graph directly with onnxruntime, and comparing its detections with
PyTorch's."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from scalemae_det.base.metadata import INPUT_NAME, OUTPUT_NAMES
from scalemae_det.export.parity import TOLERANCES

F32 = TOLERANCES["float32"]


def run_onnx(path, tiles: np.ndarray, batch: int) -> list[dict[str, np.ndarray]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return split(
        [
            session.run(list(OUTPUT_NAMES), {INPUT_NAME: tiles[i : i + batch]})
            for i in range(0, len(tiles), batch)
        ]
    )


def split(batches) -> list[dict[str, np.ndarray]]:
    """Padded batch outputs -> per-image detections; rows past num_detections must be zero."""
    images = []
    for boxes, scores, labels, counts in batches:
        for b, s, c, n in zip(boxes, scores, labels, counts):
            assert not (b[n:].any() or s[n:].any() or c[n:].any())
            images.append({"boxes": b[:n], "scores": s[:n], "labels": c[:n]})
    return images


def assert_same(got, want, tol=F32):
    assert [len(d["scores"]) for d in got] == [len(d["scores"]) for d in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g["labels"], w["labels"])
        np.testing.assert_allclose(g["boxes"], w["boxes"], rtol=0, atol=tol.box_px)
        np.testing.assert_allclose(g["scores"], w["scores"], rtol=0, atol=tol.score)
