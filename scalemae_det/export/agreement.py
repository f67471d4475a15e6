"""The int8 accuracy gate: does the quantized model find what the float32 model finds?

Element-wise parity (export/parity.py) is the wrong test for int8: every score and box moves a
little, and what matters is whether the detections survive. So the float32 graph's detections on
tiles held out from calibration stand in for ground truth, and the int8 detections are scored
against them with the xView scorer's greedy matching (`scalemae_det.metrics.xview_ap.claim`: same
class, IoU >= 0.5, each partner claimed once, in decreasing score order):

- precision: the share of int8 detections that match a float32 detection;
- recall: the share of float32 detections that an int8 detection matches.

A detection scoring within SCORE_MARGIN of the graph's score threshold may fall on either side of
it after quantization without either model being wrong, so, like parity.py's cut-off rule, such
detections are not counted on their own side, but remain available as partners on the other side.
Both shares must reach the bar (0.95 by default) for the export to be accepted.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from scalemae_det.metrics.coco_ap import evaluate_detections, load_coco_json, scene_results
from scalemae_det.metrics.xview_ap import claim
from scalemae_det.runtime.detections import Detections

SCORE_MARGIN = 0.05  # score change int8 may bring to a detection near the threshold
IOU_THRESHOLD = 0.5


def matched(found: Detections, partners: Detections, floor: float) -> tuple[int, int]:
    """(counted, matched): `found`'s detections scoring at least `floor`, and how many of them claim
    a
    same-class partner among all of `partners`."""
    counted = hits = 0
    for label in np.unique(found.labels):
        mine = (found.labels == label) & (found.scores >= floor)
        theirs = partners.boxes[partners.labels == label].astype(np.float64)
        claimed = np.zeros(len(theirs), bool)
        for i in np.flatnonzero(mine)[np.argsort(-found.scores[mine], kind="stable")]:
            hits += claim(found.boxes[i].astype(np.float64), theirs, claimed, IOU_THRESHOLD)[0]
        counted += int(mine.sum())
    return counted, hits


@dataclass
class AgreementReport:
    precision: str  # the checked model's, "int8"
    runtime: str
    tiles: int  # held-out tiles compared
    reference_detections: int  # float32 detections counted (score >= floor)
    detections: int  # int8 detections counted
    agreement_precision: float
    agreement_recall: float
    min_agreement: float
    score_floor: float
    iou_threshold: float
    calibration: dict  # method, tiles, scenes, what was quantized
    ap50: dict | None  # {"float32": x, "int8": y, "labels": path} when a labelled set was given
    float32_parity: (
        dict | None
    )  # the float32 graph's parity report against PyTorch (None: --no-validate)
    passed: bool

    def to_json(self) -> str:
        import json

        return json.dumps(asdict(self), indent=2)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        text = (
            f"int8 accuracy gate {verdict} ({self.runtime}, {self.tiles} held-out tiles): "
            f"precision {self.agreement_precision:.3f} and recall {self.agreement_recall:.3f} "
            "against float32 "
            f"(min {self.min_agreement}; {self.detections} int8 vs {self.reference_detections} "
            "float32 detections "
            f"scoring >= {self.score_floor:g}, same class, IoU >= {self.iou_threshold})"
        )
        if self.ap50:
            ap = self.ap50
            text += f"; AP50 float32 {ap['float32']:.3f}, int8 {ap['int8']:.3f} on {ap['labels']}"
        return text


def agreement(
    reference: list[Detections], exported: list[Detections], score_threshold: float
) -> tuple[float, float, int, int]:
    """(precision, recall, float32 counted, int8 counted) of `exported` against `reference`, tile by
    tile."""
    floor = score_threshold + SCORE_MARGIN
    ref_n = ref_hits = got_n = got_hits = 0
    for ref, got in zip(reference, exported, strict=True):
        n, h = matched(got, ref, floor)
        got_n, got_hits = got_n + n, got_hits + h
        n, h = matched(ref, got, floor)
        ref_n, ref_hits = ref_n + n, ref_hits + h
    # nothing confident on either side agrees trivially; the caller reports the counts beside the
    # figures
    return (got_hits / got_n if got_n else 1.0), (ref_hits / ref_n if ref_n else 1.0), ref_n, got_n


def runtime_ap50(
    model: str | os.PathLike,
    labels: str | os.PathLike,
    images: str | os.PathLike,
    provider: str = "auto",
) -> float:
    """COCO AP50 of an exported model run by the runtime over every image of a COCO label file:
    the int8 export's optional check against real labels (`ExportSpec.int8_labels`), beside the
    agreement."""
    from scalemae_det.runtime.detector import Detector

    gt = load_coco_json(labels)
    detector = Detector(model, provider)
    dets = []
    for image in gt["images"]:
        result = detector.detect_scene(os.path.join(images, image["file_name"]))
        dets += scene_results(result, image["id"], gt["categories"], detector.metadata.class_names)
    return evaluate_detections(gt, dets, max_dets=max(100, len(dets)))["AP50"]
