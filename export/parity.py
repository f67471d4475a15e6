"""Does the exported model detect what the PyTorch model detects? Generated tiles, both runs, the comparison.

Detections are compared per image after matching, not row by row: two detections with nearly
equal scores may come out in either order. Detections whose score lies within the score
tolerance of the cut-off (the threshold, or the K-th score when the cap is reached) may
legitimately be in or out, so they are left out of the count and label comparison.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from scalemae_det.base.atomic import atomic_path
from scalemae_det.models.detector import ScaleMAEDetector
from scalemae_det.runtime.detections import Detections, unpad

BLANK_INDEX = 1  # the blank tile sits between busy ones, so it has neighbours on both sides in a batch


@dataclass(frozen=True)
class Tolerance:
    box_px: float
    score: float


# float16 tolerances are what a half-precision ViT backbone gives on top of float32 heads.
TOLERANCES = {"float32": Tolerance(box_px=0.01, score=1e-4), "float16": Tolerance(box_px=1.0, score=5e-3)}


# The exported model over all tiles: detections per tile, and whether the padded rows were all zero.
Runner = Callable[[np.ndarray], tuple[list[Detections], bool]]


def validation_tiles(tile: int, batch: int, seed: int = 0) -> np.ndarray:
    """(N, 3, T, T) float32 in [0, 1], N a multiple of `batch` and at least 2: one blank tile, the rest busy
    (blocky background texture and scattered rectangles of random colours, like vehicles on ground)."""
    count = -(-max(2, batch) // batch) * batch
    rng = np.random.default_rng(seed)
    tiles = np.zeros((count, 3, tile, tile), np.float32)
    for i in range(count):
        if i == BLANK_INDEX:
            continue
        cell = 8
        coarse = rng.uniform(0.2, 0.6, (3, tile // cell, tile // cell)).astype(np.float32)
        tiles[i] = coarse.repeat(cell, axis=1).repeat(cell, axis=2)
        for _ in range(rng.integers(8, 30)):
            h, w = rng.integers(4, max(5, tile // 6), size=2)
            y, x = rng.integers(0, tile - h), rng.integers(0, tile - w)
            tiles[i, :, y:y + h, x:x + w] = rng.uniform(0, 1, (3, 1, 1))
    return tiles


def batched(run_batch: Callable[[np.ndarray], tuple[np.ndarray, ...]], batch: int) -> Runner:
    """A Runner from a function of one batch that returns the contract's padded outputs."""

    def run(tiles: np.ndarray) -> tuple[list[Detections], bool]:
        dets, padding_zero = [], True
        for start in range(0, len(tiles), batch):
            d, ok = unpad(*run_batch(tiles[start:start + batch]))
            dets += d
            padding_zero &= ok
        return dets, padding_zero

    return run


@torch.no_grad()
def run_reference(model: ScaleMAEDetector, tiles: np.ndarray, batch: int, gsd: float) -> list[Detections]:
    """The PyTorch model's own forward (its own normalisation and embedding), in batches of `batch`."""
    dets = []
    for start in range(0, len(tiles), batch):
        for out in model(list(torch.from_numpy(tiles[start:start + batch])), gsd=gsd):
            dets.append(Detections(out["boxes"].numpy(), out["scores"].numpy(), out["labels"].numpy()))
    return dets


@dataclass
class ParityReport:
    precision: str
    runtime: str
    images: int
    compared_detections: int  # reference detections clear of the cut-off, summed over images
    max_box_diff_px: float
    max_score_diff: float
    label_agreement: float  # share of compared reference detections matched by one of the same label
    count_agreement: float  # share of images with the same number of detections clear of the cut-off
    counts_reference: list[int]
    counts_exported: list[int]
    padding_zero: bool
    tolerance: dict
    passed: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"parity {verdict} ({self.precision}, {self.runtime}, {self.images} tiles, "
                f"{self.compared_detections} detections): max box diff {self.max_box_diff_px:.2g} px "
                f"(tol {self.tolerance['box_px']}), max score diff {self.max_score_diff:.2g} "
                f"(tol {self.tolerance['score']}), labels {self.label_agreement:.1%}, counts {self.count_agreement:.1%}, "
                f"per-tile counts {self.counts_reference} vs {self.counts_exported}"
                + ("; nothing to compare: no detection on the generated tiles scores clear of the cut-off by more than the tolerance"
                   if self.compared_detections == 0 else ""))


def _match(ref: Detections, got: Detections) -> tuple[int, list[float], list[float]]:
    """Greedy, in reference score order: each detection takes the unused one of the same label with the
    nearest box. Returns (matched count, box diffs, score diffs)."""
    free = np.ones(len(got.scores), bool)
    box_diffs, score_diffs = [], []
    for i in np.argsort(-ref.scores, kind="stable"):
        candidates = np.flatnonzero(free & (got.labels == ref.labels[i]))
        if not len(candidates):
            continue
        diff = np.abs(got.boxes[candidates] - ref.boxes[i]).max(axis=1)
        j = candidates[np.argmin(diff)]
        free[j] = False
        box_diffs.append(float(diff.min()))
        score_diffs.append(float(abs(got.scores[j] - ref.scores[i])))
    return len(box_diffs), box_diffs, score_diffs


def compare(reference: list[Detections], exported: list[Detections], score_threshold: float,
            max_detections: int, precision: str, runtime: str, padding_zero: bool = True) -> ParityReport:
    tol = TOLERANCES[precision]
    compared = matched = same_counts = 0
    box_diffs, score_diffs = [0.0], [0.0]
    for ref, got in zip(reference, exported, strict=True):
        floor = score_threshold if len(ref.scores) < max_detections else float(ref.scores.min())
        cut = floor + tol.score
        ref_c, got_c = ref.take(ref.scores > cut), got.take(got.scores > cut)
        n, boxes, scores = _match(ref_c, got_c)
        compared += len(ref_c.scores)
        matched += n
        same_counts += len(ref_c.scores) == len(got_c.scores)
        box_diffs += boxes
        score_diffs += scores
    report = ParityReport(
        precision=precision, runtime=runtime, images=len(reference), compared_detections=compared,
        max_box_diff_px=max(box_diffs), max_score_diff=max(score_diffs),
        label_agreement=matched / compared if compared else 1.0,
        count_agreement=same_counts / len(reference),
        counts_reference=[len(d.scores) for d in reference], counts_exported=[len(d.scores) for d in exported],
        padding_zero=padding_zero, tolerance=asdict(tol), passed=False)
    report.passed = bool(report.max_box_diff_px <= tol.box_px and report.max_score_diff <= tol.score
                         and report.label_agreement == 1.0 and report.count_agreement == 1.0 and padding_zero)
    return report


@dataclass
class ParityCheck:
    """The validation tiles and the PyTorch model's detections on them, computed once per export."""

    tiles: np.ndarray
    reference: list[Detections]
    batch: int
    score_threshold: float
    max_detections: int
    precision: str

    @classmethod
    def build(cls, prep) -> "ParityCheck":
        """From an `scalemae_det.export.prepare.Prepared`: its float32 model is the reference whatever the export's precision."""
        spec = prep.spec
        tiles = validation_tiles(spec.tile, spec.batch)
        reference = run_reference(prep.model, tiles, spec.batch, spec.gsd)
        return cls(tiles, reference, spec.batch, spec.score_threshold, spec.max_detections, prep.metadata.precision)

    def run(self, runner: Runner, runtime: str) -> ParityReport:
        exported, padding_zero = runner(self.tiles)
        return compare(self.reference, exported, self.score_threshold, self.max_detections,
                       self.precision, runtime, padding_zero)


def report_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".parity.json")


def record_report(model_path: Path, report: ParityReport | None) -> Path | None:
    """Write the report beside the model; an unvalidated export (no report) removes the report of an
    earlier one instead, which would describe another model."""
    path = report_path(model_path)
    if report is None:
        path.unlink(missing_ok=True)
        return None
    with atomic_path(path) as tmp:
        tmp.write_text(report.to_json() + "\n")
    return path
