"""`scalemae-det merge OUT --to all.gpkg`: every scene of a job in one layer, duplicates across scenes removed."""

from __future__ import annotations

from pathlib import Path

import typer


def merge_command(
    out: Path = typer.Argument(..., help="the --out folder of the predict job (all its shards)"),
    to: Path = typer.Option(
        ..., "--to", help="the layer to write: .gpkg (GeoPackage) or .fgb (FlatGeobuf)"
    ),
    crs: str = typer.Option(
        "EPSG:4326", "--crs", help="CRS of the layer, e.g. EPSG:4326 or EPSG:32633"
    ),
    match: str = typer.Option(
        "ios", "--match", help="duplicates across scenes: ios (intersection over smaller) or iou"
    ),
) -> None:
    """Gather the detections of every done scene into one layer, in one CRS, each object once."""
    from scalemae_det.runtime.mosaic import merge_job

    report = merge_job(out, to, crs=crs, match=match)
    for note in report.notes:
        typer.echo(f"warning: {note}", err=True)
    typer.echo(
        f"{report.scenes} scenes ({report.overlapping_pairs} overlapping pairs, compared in "
        f"{report.metric_crs}): {report.detections} detections, {report.removed} duplicates removed, "
        f"{report.kept} written to {to} ({crs})",
        err=True,
    )
