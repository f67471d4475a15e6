"""`scalemae-det predict`: the flags of scalemae_det.runtime.job.predict_job.

Only typer is imported at module level; onnxruntime, rasterio and rich are imported when the
command runs, so the CLI starts fast and never needs torch.
"""

from __future__ import annotations

from pathlib import Path

import typer

from scalemae_det.base import checks
from scalemae_det.base.errors import dashed_flag
from scalemae_det.base.metadata import DEFAULT_OVERLAP, DEFAULT_TTA_IOU
from scalemae_det.cli.options import (
    bands_option,
    crs_option,
    match_option,
    out_option,
    provider_option,
    score_threshold_option,
)


def predict_command(
    scenes: list[str] = typer.Argument(
        ...,
        help="GeoTIFF scenes: files, directories, glob patterns, URLs (https://, s3://, gs://, "
        "az://) or STAC Item/ItemCollection JSON (a file or a URL)",
    ),
    model: list[Path] = typer.Option(
        ...,
        "--model",
        help="exported scalemae-det ONNX model; given more than once, an ensemble: each model "
        "runs over every scene and their detections are fused (one checkpoint exported at "
        "several GSDs tests at several scales)",
    ),
    out: Path = out_option("output folder (one file per scene)"),
    provider: str = provider_option(),
    overlap: float = typer.Option(
        DEFAULT_OVERLAP, "--overlap", help="fraction of a tile shared with its neighbour"
    ),
    batch: int = typer.Option(None, "--batch", help="tiles per run", show_default="the model's"),
    score_threshold: float = score_threshold_option(),
    bands: str = bands_option("RGB by colour interpretation, else the first three"),
    scale: str = typer.Option(
        "auto", "--scale", help="auto (2-98% stretch; uint8 /255) or MIN,MAX"
    ),
    gsd_mode: str = typer.Option(
        "resample", "--gsd-mode", help="resample to the model's GSD, or as-is"
    ),
    crs: str = crs_option(),
    fmt: str = typer.Option("geojson", "--format", help="geojson | coco | csv | gpkg"),
    match: str = match_option(),
    tta: str = typer.Option(
        "none",
        "--tta",
        help="test-time views fused per tile: none, flip2 (and the left-right mirror), flip4 "
        "(and the top-bottom and both mirrors), d8 (those four transposed too); each view is "
        "one more run a tile",
    ),
    tta_iou: float = typer.Option(
        DEFAULT_TTA_IOU, "--tta-iou", help="IoU over which the views' boxes fuse into one"
    ),
    ensemble_iou: float = typer.Option(
        DEFAULT_TTA_IOU,
        "--ensemble-iou",
        help="IoU over which the boxes of several --model fuse into one",
    ),
    preview: Path = typer.Option(
        None, "--preview", help="quicklook PNG; with several scenes put {scene} in the name"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="redo scenes whose output exists"),
    threads: int = typer.Option(
        None, "--threads", help="CPU threads for onnxruntime", show_default="all"
    ),
    shard: str = typer.Option(
        None,
        "--shard",
        help="K/N: run only shard K of N (by scene name), or auto "
        "(Slurm array task, Kubernetes completion index)",
    ),
    shard_count: int = typer.Option(
        None,
        "--shard-count",
        help="N for --shard auto in a Kubernetes Indexed Job (its completions)",
    ),
    aoi: Path = typer.Option(
        None,
        "--aoi",
        help="area of interest (any vector file, any CRS): only tiles meeting it are read, "
        "detections outside it dropped",
    ),
    stac_asset: str = typer.Option(
        None,
        "--stac-asset",
        help="asset of STAC items to read",
        show_default="visual, else the first GeoTIFF data asset",
    ),
) -> None:
    """Detect objects in GeoTIFF scenes with an exported ONNX model (no PyTorch needed)."""
    from scalemae_det.runtime.job import SceneOptions, predict_job

    options = SceneOptions(
        overlap,
        score_threshold,
        checks.bands("bands", bands),
        checks.value_scale("scale", scale),
        gsd_mode,
        match,
        fmt,
        crs,
        overwrite,
        aoi,
        stac_asset,
        tta,
        tta_iou,
        ensemble_iou,
    )
    failed = predict_job(
        scenes,
        model,
        out,
        options,
        preview=preview,
        shard=shard,
        shard_count=shard_count,
        provider=provider,
        batch=batch,
        threads=threads,
        spell=dashed_flag,
    )
    if failed:
        raise typer.Exit(1)


__all__ = ["predict_command"]
