"""Detections as three parallel arrays, the contract's padded outputs turned into them, box IoU.

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


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes (continuous coordinates, no +1)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
