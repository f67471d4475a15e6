"""Writing and printing metrics: the JSON file and the rich table of `evaluate_detections`."""

from __future__ import annotations

import json
import os

from scalemae_det.base.atomic import atomic_path
from scalemae_det.metrics.coco_ap import COCO_METRICS
from scalemae_det.metrics.xview_ap import XVIEW_NAMES


def write_results(path: str | os.PathLike, results: dict | list) -> None:
    """Write metrics or detections as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1))


def print_metrics(metrics: dict, console=None) -> None:
    """The summary line and the per-class table of `evaluate_detections`' result, with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    summary = "  ".join(
        [
            *(f"{k} {fmt(metrics[k])}" for k in COCO_METRICS),
            f"{metrics.get('xview_metric', XVIEW_NAMES['corrected'])} {fmt(metrics['xview_mAP'])}",
        ]
    )
    table = Table(title="per-class AP at IoU 0.5")
    for col, justify in (
        ("id", "right"),
        ("class", "left"),
        ("gt boxes", "right"),
        ("AP50 (COCO)", "right"),
        (metrics.get("xview_metric", XVIEW_NAMES["corrected"]), "right"),
    ):
        table.add_column(col, justify=justify)
    for row in metrics["per_class"]:
        table.add_row(
            str(row["id"]), row["name"], str(row["num_gt"]), fmt(row["AP50"]), fmt(row["xview_AP"])
        )
    console.print(table)
    console.print(summary)
