"""`scalemae-det prepare`: labelled imagery of any common format cut into chips with COCO train/val
labels (scalemae_det.data.prepare)."""

from __future__ import annotations

from pathlib import Path

import typer

from scalemae_det.base import checks
from scalemae_det.data.chipping import DEFAULT_SEED, ChipConfig
from scalemae_det.data.prepare import DEFAULT_VAL_FRACTION, prepare

DEFAULTS = ChipConfig()


def prepare_command(
    images: list[str] = typer.Option(
        ...,
        "--images",
        help="images: files, folders, glob patterns or URLs (https://, s3://, gs://, az://; "
        "GeoTIFF and other GDAL rasters, PNG, JPEG); repeat for several",
    ),
    labels: Path = typer.Option(
        ...,
        "--labels",
        help="a Pascal VOC .xml file or folder, a YOLO folder, a .csv, a COCO .json, or a vector "
        "file (.geojson, .gpkg, .shp, .fgb)",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="output folder"),
    class_field: str = typer.Option(
        None, "--class-field", help="attribute (vector) or column (CSV) holding the class"
    ),
    classes: str = typer.Option(
        None,
        "--classes",
        help="comma-separated class names: fixes their order and drops the rest",
        show_default="the labels' classes",
    ),
    gsd: float = typer.Option(
        None,
        "--gsd",
        help="metres per pixel of images without a georeference (PNG, JPEG)",
        show_default="measured from the georeference",
    ),
    point_size: float = typer.Option(
        None, "--point-size", help="side in metres of the box a point feature becomes"
    ),
    bands: str = typer.Option(
        None,
        "--bands",
        help="1 or 3 band numbers, 1-based, e.g. 4,3,2 (as predict's)",
        show_default="all of each image's bands",
    ),
    chip: int = typer.Option(DEFAULTS.chip, "--chip", help="chip side in pixels"),
    overlap: float = typer.Option(
        DEFAULTS.overlap, "--overlap", help="fraction of a chip shared with the next"
    ),
    min_visible: float = typer.Option(
        DEFAULTS.min_visible,
        "--min-visible",
        help="keep a box cut by a chip edge if, along x and along y, this fraction "
        "of what a chip can show of it remains (else an ignore region)",
    ),
    val_fraction: float = typer.Option(
        DEFAULT_VAL_FRACTION, "--val-fraction", help="fraction of scenes (whole images) for val"
    ),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="seed of the scene split"),
    skip_unreadable: bool = typer.Option(
        False,
        "--skip-unreadable",
        help="leave out images that cannot be read (counted) instead of stopping",
    ),
) -> None:
    """Cut labelled images into chips with COCO train/val labels (split by scene), the layout
    prepare-xview writes and train.py reads."""
    counts = prepare(
        images,
        labels,
        out,
        class_field=class_field,
        classes=None if classes is None else classes.split(","),
        gsd=gsd,
        point_size=point_size,
        bands=checks.bands("bands", bands),
        cfg=ChipConfig(chip, overlap, min_visible, DEFAULTS.min_size),
        val_fraction=val_fraction,
        seed=seed,
        skip_unreadable=skip_unreadable,
    )
    print(
        f"{counts['format']} labels, {len(counts['classes'])} classes: "
        + ", ".join(counts["classes"])
    )
    for split in ("train", "val"):
        print(
            f"{split}: {counts['scenes'][split]} scenes, {counts['chips'][split]} chips, "
            f"{counts['boxes'][split]} boxes -> {out / split}, {out / f'{split}.json'}"
        )
