"""`scalemae-det synth-scene` and `synth-chips`."""

from __future__ import annotations

from pathlib import Path

import typer


def synth_scene(
    out: Path = typer.Option(
        ..., "-o", "--out", help="GeoTIFF to write; its COCO ground truth goes beside it (.json)"
    ),
    size: int = typer.Option(4096, help="width and height in pixels"),
    seed: int = typer.Option(0, help="layout and texture seed"),
    gsd: float = typer.Option(0.5, help="ground sample distance, metres per pixel"),
    crs: str = typer.Option("EPSG:32633", help="projected CRS in metres"),
    nodata_collar: bool = typer.Option(
        False, "--nodata-collar", help="irregular nodata band along the edges"
    ),
) -> None:
    """Write a synthetic georeferenced scene with vehicles, buildings and storage tanks."""
    from scalemae_det.synthetic.writers import write_scene

    coco = write_scene(out, size, seed=seed, gsd=gsd, crs=crs, nodata_collar=nodata_collar)
    print(
        f"wrote {out} ({size} x {size} px, GSD {gsd} m, {len(coco['annotations'])} objects) "
        f"and {out.with_suffix('.json')}"
    )


def synth_chips(
    out: Path = typer.Option(..., "-o", "--out", help="folder for the chips and labels.json"),
    count: int = typer.Option(..., help="number of chips"),
    size: int = typer.Option(256, help="chip width and height in pixels"),
    seed: int = typer.Option(0, help="seed of the whole set"),
    gsd: float = typer.Option(0.5, help="GSD in metres per pixel (the minimum with --gsd-max)"),
    gsd_max: float = typer.Option(
        None, help="draw each chip's GSD uniformly from [--gsd, --gsd-max]"
    ),
    crs: str = typer.Option("EPSG:32633", help="projected CRS in metres"),
) -> None:
    """Write a training set of synthetic GeoTIFF chips with COCO labels."""
    from scalemae_det.synthetic.writers import write_chips

    labels = write_chips(
        out, count, size=size, seed=seed, gsd=gsd if gsd_max is None else (gsd, gsd_max), crs=crs
    )
    print(f"wrote {count} chips and {labels}")
