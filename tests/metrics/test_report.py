"""Writing and printing metrics (scalemae_det.metrics.report)."""

import io
import json

import numpy as np

from helpers.coco import random_dataset
from scalemae_det.metrics.coco_ap import evaluate_detections
from scalemae_det.metrics.report import print_metrics, write_results


def test_write_results_and_table(tmp_path):
    gt, dets = random_dataset(np.random.default_rng(3))
    metrics = evaluate_detections(gt, dets)
    out = tmp_path / "metrics.json"
    write_results(out, metrics)
    assert json.loads(out.read_text()) == metrics
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind

    from rich.console import Console

    console = Console(file=io.StringIO(), width=120)
    print_metrics(metrics, console)
    text = console.file.getvalue()
    assert "class7" in text and f"{metrics['AP']:.3f}" in text
