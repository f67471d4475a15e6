"""`scalemae-det score`: detections of whole scenes against labelled ground truth
(scalemae_det.metrics.scenes)."""

from __future__ import annotations

from pathlib import Path

import typer

from scalemae_det.base import checks
from scalemae_det.base.errors import MissingPathError
from scalemae_det.base.metadata import DEFAULT_OVERLAP
from scalemae_det.cli.options import out_option


def score_command(
    detections: list[Path] = typer.Argument(
        ..., help="predict's outputs (GeoJSON, COCO results, CSV, GeoPackage), one or many scenes"
    ),
    truth: Path = typer.Option(
        ...,
        "--truth",
        help="ground truth: COCO JSON in scene pixels (file_name = the "
        "scene's), GeoJSON polygons in any CRS (needs --scene), or xView's GeoJSON",
    ),
    scenes: list[Path] = typer.Option(
        [], "--scene", help="a scene raster, to place GeoJSON polygons in its pixels (repeatable)"
    ),
    out: Path = out_option("also write the metrics as JSON", required=False),
    iou: float = typer.Option(
        0.5,
        "--iou",
        help="IoU a detection needs to match, for the xView AP and the "
        "duplicates (COCO AP50 is at 0.5)",
    ),
    official_counting: bool = typer.Option(
        False,
        "--official-counting",
        help="xView AP with the official scorer's counting (ground truth only in "
        "scenes where its class was predicted); default: every box counted",
    ),
    tile: int = typer.Option(
        None, "--tile", help="predict's tile in scene pixels, to count duplicates at its seams"
    ),
    overlap: float = typer.Option(
        DEFAULT_OVERLAP, "--overlap", help="predict's tile overlap, with --tile"
    ),
) -> None:
    """Score detections of whole scenes: COCO AP and AP50 per class, the xView AP, duplicates at
    tile seams."""
    from rich.console import Console

    from scalemae_det.metrics.report import print_metrics, write_results
    from scalemae_det.metrics.scenes import read_truth, results_for_truth, score_scenes

    checks.number("iou", iou, lo=0, hi=1, lo_open=True, hi_open=True)
    checks.number("tile", tile, lo=1, integer=True)
    checks.number("overlap", overlap, lo=0, hi=1, hi_open=True)
    for path in (*detections, truth, *scenes):
        if not path.is_file():
            raise MissingPathError(f"{path}: no such file")
    if out is not None:
        checks.output_file(out, "out")
    gt = read_truth(truth, scenes)
    dets = results_for_truth(detections, gt)
    metrics = score_scenes(
        gt,
        dets,
        iou_threshold=iou,
        tile=tile,
        overlap=overlap,
        xview_counting="official" if official_counting else "corrected",
    )
    console = Console()
    print_metrics(metrics, console)
    seams = f", {metrics['seam_duplicates']} at tile seams" if "seam_duplicates" in metrics else ""
    console.print(
        f"{metrics['num_detections']} detections in {metrics['num_images']} scene(s); "
        f"{metrics['duplicates']} duplicate(s){seams}"
    )
    if out is not None:
        write_results(out, metrics)
