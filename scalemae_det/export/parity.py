"""Does the exported model detect what the PyTorch model detects? Generated tiles, both runs, the
comparison.

Detections are compared per image after matching, not row by row: two detections with nearly
equal scores may come out in either order. Detections whose score lies within the score
tolerance of the cut-off (the threshold, or the K-th score when the cap is reached) may
legitimately be in or out, so they are left out of the count and label comparison.

A comparison needs something to compare: a model whose scores all stay under the export's
threshold (undertrained, or with NaN weights, whose every score is NaN) gives no detection on
either side and would "agree". So when the export's threshold leaves fewer than PROBE_COUNT
detections on the tiles, both sides also run at a lower threshold that lets the PROBE_COUNT best
of the reference through (the graph's threshold is an overridable initializer, see fixed_scale).
Not lower than that: the lowest-scoring boxes are the ones NMS keeps or drops on a rounding
difference, which a half-precision backbone makes. Parity holds only when this probe compares at
least one detection, every output is finite, and both comparisons agree; a model that detects
nothing even at threshold 0 fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from scalemae_det.base.atomic import atomic_path
from scalemae_det.models.detector import ScaleMAEDetector
from scalemae_det.runtime.detections import Detections, unpad

BLANK_INDEX = (
    1  # the blank tile sits between busy ones, so it has neighbours on both sides in a batch
)
PROBE_COUNT = (
    10  # detections the comparison covers at least, lowering the threshold for them if need be
)


@dataclass(frozen=True)
class Tolerance:
    box_px: float
    score: float


# float16 tolerances are what a half-precision ViT backbone gives on top of float32 heads.
TOLERANCES = {
    "float32": Tolerance(box_px=0.01, score=1e-4),
    "float16": Tolerance(box_px=1.0, score=5e-3),
}


# The exported model over all tiles: detections per tile, and whether the padded rows were all zero.
Runner = Callable[[np.ndarray], tuple[list[Detections], bool]]
# threshold (None: the graph's own) -> (the exported model at that threshold, runtime name)
RunnerFactory = Callable[[float | None], tuple[Runner, str]]


def validation_tiles(tile: int, batch: int, seed: int = 0) -> np.ndarray:
    """(N, 3, T, T) float32 in [0, 1], N a multiple of `batch` and at least 2: one blank tile, the
    rest busy
    (blocky background texture and scattered rectangles of random colours, like vehicles on
    ground)."""
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
            tiles[i, :, y : y + h, x : x + w] = rng.uniform(0, 1, (3, 1, 1))
    return tiles


def batched(run_batch: Callable[[np.ndarray], tuple[np.ndarray, ...]], batch: int) -> Runner:
    """A Runner from a function of one batch that returns the contract's padded outputs."""

    def run(tiles: np.ndarray) -> tuple[list[Detections], bool]:
        dets, padding_zero = [], True
        for start in range(0, len(tiles), batch):
            d, ok = unpad(*run_batch(tiles[start : start + batch]))
            dets += d
            padding_zero &= ok
        return dets, padding_zero

    return run


@torch.no_grad()
def run_reference(
    model: ScaleMAEDetector, tiles: np.ndarray, batch: int, gsd: float
) -> list[Detections]:
    """The PyTorch model's own forward (its own normalisation and embedding), in batches of
    `batch`."""
    dets = []
    for start in range(0, len(tiles), batch):
        for out in model(list(torch.from_numpy(tiles[start : start + batch])), gsd=gsd):
            dets.append(
                Detections(out["boxes"].numpy(), out["scores"].numpy(), out["labels"].numpy())
            )
    return dets


@dataclass
class ParityReport:
    precision: str
    runtime: str
    images: int
    compared_detections: int  # reference detections clear of the cut-off, summed over images
    max_box_diff_px: float
    max_score_diff: float
    label_agreement: (
        float  # share of compared reference detections matched by one of the same label
    )
    count_agreement: (
        float  # share of images with the same number of detections clear of the cut-off
    )
    counts_reference: list[int]
    counts_exported: list[int]
    padding_zero: bool
    tolerance: dict
    passed: bool
    finite: bool = True  # every box and score of both runs is a finite number
    probe: dict | None = None  # the comparison at the probe threshold (ParityCheck.run)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        probe = self.probe
        return (
            f"parity {verdict} ({self.precision}, {self.runtime}, {self.images} tiles, "
            f"{self.compared_detections} detections): max box diff {self.max_box_diff_px:.2g} px "
            f"(tol {self.tolerance['box_px']}), max score diff {self.max_score_diff:.2g} "
            f"(tol {self.tolerance['score']}), labels {self.label_agreement:.1%}, counts "
            f"{self.count_agreement:.1%}, "
            f"per-tile counts {self.counts_reference} vs {self.counts_exported}"
            + ("" if self.finite else "; NON-FINITE boxes or scores")
            + (
                ""
                if probe is None or not (probe["lowered"] or probe["compared_detections"] == 0)
                else f"; at score threshold {probe['score_threshold']:g}: "
                f"{probe['compared_detections']} detections, "
                f"max box diff {probe['max_box_diff_px']:.2g} px, max score diff "
                f"{probe['max_score_diff']:.2g}"
                + ("" if probe["finite"] else ", NON-FINITE outputs")
                + (
                    " (nothing to compare: the model detects nothing on the generated tiles; are "
                    "its weights finite?)"
                    if probe["compared_detections"] == 0
                    else ""
                )
            )
        )


def _match(ref: Detections, got: Detections) -> tuple[int, list[float], list[float]]:
    """Greedy, in reference score order: each detection takes the unused one of the same label with
    the
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


def compare(
    reference: list[Detections],
    exported: list[Detections],
    score_threshold: float,
    max_detections: int,
    precision: str,
    runtime: str,
    padding_zero: bool = True,
) -> ParityReport:
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
    finite = all(
        np.isfinite(d.boxes).all() and np.isfinite(d.scores).all() for d in [*reference, *exported]
    )
    report = ParityReport(
        precision=precision,
        runtime=runtime,
        images=len(reference),
        compared_detections=compared,
        max_box_diff_px=max(box_diffs),
        max_score_diff=max(score_diffs),
        label_agreement=matched / compared if compared else 1.0,
        count_agreement=same_counts / len(reference),
        counts_reference=[len(d.scores) for d in reference],
        counts_exported=[len(d.scores) for d in exported],
        padding_zero=padding_zero,
        tolerance=asdict(tol),
        passed=False,
        finite=bool(finite),
    )
    report.passed = bool(
        report.max_box_diff_px <= tol.box_px
        and report.max_score_diff <= tol.score
        and report.label_agreement == 1.0
        and report.count_agreement == 1.0
        and padding_zero
        and finite
    )
    return report


@contextmanager
def threshold_set(wrapper, value: float) -> Iterator[None]:
    """The fixed-scale module (and the model sharing its heads) at another score threshold, for a
    while."""
    buffer = wrapper.score_threshold
    saved = float(buffer)
    buffer.fill_(value)
    try:
        yield
    finally:
        buffer.fill_(saved)


@dataclass
class ParityCheck:
    """The validation tiles and the PyTorch model's detections on them, computed once per export."""

    tiles: np.ndarray
    reference: list[Detections]
    probe_threshold: (
        float  # at most score_threshold; 0 when the reference detects nothing even there
    )
    probe_reference: list[Detections]  # at probe_threshold
    batch: int
    score_threshold: float
    max_detections: int
    precision: str

    @classmethod
    def build(cls, prep) -> ParityCheck:
        """From an `scalemae_det.export.prepare.Prepared`: its float32 model is the reference
        whatever the export's precision."""
        spec = prep.spec
        tiles = validation_tiles(spec.tile, spec.batch)
        precision = prep.metadata.precision
        reference = run_reference(prep.model, tiles, spec.batch, spec.gsd)
        with threshold_set(prep.wrapper, 0.0):
            everything = run_reference(prep.model, tiles, spec.batch, spec.gsd)
        scores = np.sort(np.concatenate([d.scores for d in everything]))[::-1]
        if not len(scores):
            probe_threshold, probe = 0.0, everything
        else:  # the PROBE_COUNT-th best clear of the cut-off by more than the score tolerance
            kth = float(scores[min(PROBE_COUNT, len(scores)) - 1])
            probe_threshold = min(
                spec.score_threshold, max(0.0, kth - 2 * TOLERANCES[precision].score)
            )
            if probe_threshold < spec.score_threshold:
                with threshold_set(prep.wrapper, probe_threshold):
                    probe = run_reference(prep.model, tiles, spec.batch, spec.gsd)
            else:
                probe = reference
        return cls(
            tiles,
            reference,
            probe_threshold,
            probe,
            spec.batch,
            spec.score_threshold,
            spec.max_detections,
            precision,
        )

    def run(self, runners: RunnerFactory) -> ParityReport:
        """Compare at the export's threshold and, when it is lower, at the probe's;
        `runners(threshold)` gives the exported model at a threshold (None: its own)."""
        runner, runtime = runners(None)
        exported, padding_zero = runner(self.tiles)
        report = compare(
            self.reference,
            exported,
            self.score_threshold,
            self.max_detections,
            self.precision,
            runtime,
            padding_zero,
        )
        probe = report
        if self.probe_threshold < self.score_threshold:
            probe_exported, probe_padding = runners(self.probe_threshold)[0](self.tiles)
            probe = compare(
                self.probe_reference,
                probe_exported,
                self.probe_threshold,
                self.max_detections,
                self.precision,
                runtime,
                probe_padding,
            )
        report.probe = {
            "score_threshold": self.probe_threshold,
            "lowered": self.probe_threshold < self.score_threshold,
            "compared_detections": probe.compared_detections,
            "max_box_diff_px": probe.max_box_diff_px,
            "max_score_diff": probe.max_score_diff,
            "finite": probe.finite,
            "passed": probe.passed,
        }
        report.passed = report.passed and probe.passed and probe.compared_detections > 0
        return report


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
