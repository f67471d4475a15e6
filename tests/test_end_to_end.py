"""The bundled model through export and the torch-free runtime on a generated scene: seams and
accuracy."""

import numpy as np
import pytest

from scalemae_det.demo import BUNDLED

TILE, OVERLAP = 256, 0.2


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    from scalemae_det.export.onnx_export import export_onnx
    from scalemae_det.export.options import ExportSpec
    from scalemae_det.runtime import Detector
    from scalemae_det.synthetic import write_scene

    work = tmp_path_factory.mktemp("e2e")
    gt = write_scene(work / "scene.tif", 1024, seed=77, gsd=0.5)
    model = export_onnx(BUNDLED, work / "model.onnx", ExportSpec(gsd=0.5, tile=TILE, batch=2))
    result = Detector(model.path).detect_scene(work / "scene.tif", overlap=OVERLAP)
    boxes = np.array(
        [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in gt["annotations"])]
    )
    return result, boxes, np.array([a["category_id"] for a in gt["annotations"]])


def cut_by_a_seam(boxes: np.ndarray, tiles) -> np.ndarray:
    """Objects that some tile sees only in part (crossed by one of its inner edges)."""
    cut = np.zeros(len(boxes), bool)
    for t in tiles:
        for inner, axis, edge in zip(
            t.inner, (0, 1, 0, 1), (t.col, t.row, t.col + t.width, t.row + t.height)
        ):
            if inner:
                other = 1 - axis
                lo, hi = (t.row, t.row + t.height) if axis == 0 else (t.col, t.col + t.width)
                crosses = (boxes[:, axis] < edge) & (boxes[:, axis + 2] > edge)
                overlaps = (boxes[:, other] < hi) & (boxes[:, other + 2] > lo)
                cut |= crosses & overlaps
    return cut


def test_objects_cut_by_seams_are_found_once(scene_run):
    result, gt_boxes, gt_labels = scene_run
    det = result.detections
    cut = cut_by_a_seam(gt_boxes, result.scene.tiles)
    assert cut.sum() >= 30  # the scene really exercises the seams
    rates = {}
    for threshold in (0.05, 0.3):  # the export's floor, and a working threshold
        keep = det.scores >= threshold
        matches = (iou(gt_boxes, det.boxes[keep]) >= 0.5) & (
            gt_labels[:, None] == det.labels[keep][None, :]
        )
        hits = matches.sum(axis=1)
        rates[threshold] = {
            "seam_dup": float(np.mean(hits[cut] > 1)),
            "inner_dup": float(np.mean(hits[~cut] > 1)),
            "seam_recall": float(np.mean(hits[cut] > 0)),
            "inner_recall": float(np.mean(hits[~cut] > 0)),
        }
        print(
            f"score >= {threshold}: {cut.sum()} of {len(gt_boxes)} objects cut by a seam; "
            + ", ".join(f"{k} {v:.3f}" for k, v in rates[threshold].items())
        )
    # below 0.3 the detector doubles some objects anywhere; seams must add no duplicates of their
    # own
    assert rates[0.05]["seam_dup"] <= rates[0.05]["inner_dup"] + 0.02
    assert rates[0.3]["seam_dup"] <= 0.02
    assert rates[0.3]["inner_recall"] >= 0.9
    assert (
        rates[0.3]["seam_recall"] >= rates[0.3]["inner_recall"] - 0.1
    )  # merging keeps what it de-duplicates


def test_no_detection_is_far_from_every_object(scene_run):
    result, gt_boxes, _ = scene_run
    best = iou(result.detections.boxes[result.detections.scores > 0.5], gt_boxes).max(axis=1)
    print(f"{len(best)} confident detections, {np.mean(best < 0.1):.3f} touch no object")
    assert np.mean(best < 0.1) <= 0.05
