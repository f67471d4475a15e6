"""`scalemae-det merge JOB -o all.gpkg`: every scene of a job in one layer, duplicates across
scenes removed (scalemae_det.runtime.job_layer.merge_job)."""

from __future__ import annotations

from pathlib import Path

import typer

from scalemae_det.cli.options import crs_option, match_option, out_option


def merge_command(
    job: Path = typer.Argument(..., help="the output folder of the predict job (all its shards)"),
    out: Path = out_option("the layer to write: .gpkg (GeoPackage) or .fgb (FlatGeobuf)"),
    crs: str = crs_option(),
    match: str = match_option(),
) -> None:
    """Gather the detections of every done scene into one layer, in one CRS, each object once."""
    from scalemae_det.runtime.job_layer import merge_job

    report = merge_job(job, out, crs=crs, match=match)
    for note in report.notes:
        typer.echo(f"warning: {note}", err=True)
    typer.echo(
        f"{report.scenes} scenes ({report.overlapping_pairs} overlapping pairs, compared in "
        f"{report.metric_crs}): {report.detections} detections, {report.removed} duplicates "
        f"removed, {report.kept} written to {out} ({crs})",
        err=True,
    )
