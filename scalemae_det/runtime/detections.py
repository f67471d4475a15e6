"""Detections as three parallel arrays, and the contract's padded outputs turned into them.

One type for every layer that handles detections: the runtime's tiles and scenes, the export's
parity check (which runs the exported model through the same `Session`), the scorers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    boxes: (
        np.ndarray
    )  # (N, 4) xyxy pixels (tile pixels from a session, scene pixels from detect_scene)
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64, 1..classes

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        if not parts:
            return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return cls(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("boxes", "scores", "labels"))
        )

    def take(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.scores[index], self.labels[index])


def unpad(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, counts: np.ndarray
) -> tuple[list[Detections], bool]:
    """A batch of the contract's padded outputs -> detections per image, and whether every row past
    `num_detections` is zero as the contract says (the export's parity check insists on it)."""
    dets, padding_zero = [], True
    for b, s, c, n in zip(boxes, scores, labels, counts.tolist()):
        dets.append(Detections(b[:n], s[:n], c[:n]))
        padding_zero &= not (b[n:].any() or s[n:].any() or c[n:].any())
    return dets, bool(padding_zero)
