"""`scalemae-det prepare-xview`: xView cut into georeferenced chips
(scalemae_det.data.readers.xview)."""

from __future__ import annotations

from pathlib import Path

import typer

from scalemae_det.base.errors import InputError
from scalemae_det.data.chipping import DEFAULT_SEED, ChipConfig
from scalemae_det.data.readers.xview import DEFAULT_DROP, DEFAULT_VAL_FRACTION, prepare_xview

DEFAULTS = ChipConfig()


def prepare_xview_command(
    geojson: Path = typer.Option(..., "--geojson", help="xView_train.geojson"),
    images: Path = typer.Option(..., "--images", help="folder of the xView scenes (5.tif, ...)"),
    out: Path = typer.Option(..., "-o", "--out", help="output folder"),
    chip: int = typer.Option(DEFAULTS.chip, "--chip", help="chip side in pixels"),
    overlap: float = typer.Option(
        DEFAULTS.overlap, "--overlap", help="fraction of a chip shared with the next"
    ),
    val_fraction: float = typer.Option(
        DEFAULT_VAL_FRACTION, "--val-fraction", help="fraction of scenes for val"
    ),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="seed of the scene split"),
    drop_classes: str = typer.Option(
        ",".join(map(str, DEFAULT_DROP)),
        "--drop-classes",
        help="comma-separated xView type ids to leave out",
    ),
    min_visible: float = typer.Option(
        DEFAULTS.min_visible,
        "--min-visible",
        help="keep a box cut by a chip edge if, along x and along y, this fraction "
        "of what a chip can show of it remains (else an ignore region)",
    ),
    skip_unreadable: bool = typer.Option(
        False,
        "--skip-unreadable",
        help="leave out scenes that cannot be read (counted) instead of stopping",
    ),
) -> None:
    """Cut xView scenes into georeferenced chips with COCO train/val labels (split by scene)."""
    try:
        drop = [int(t) for t in drop_classes.split(",") if t.strip()]
    except ValueError:
        raise InputError(
            f"--drop-classes: expected comma-separated integers, got {drop_classes!r}"
        ) from None
    counts = prepare_xview(
        geojson,
        images,
        out,
        val_fraction=val_fraction,
        seed=seed,
        drop_classes=drop,
        cfg=ChipConfig(chip, overlap, min_visible, DEFAULTS.min_size),
        skip_unreadable=skip_unreadable,
    )
    for split in ("train", "val"):
        print(
            f"{split}: {counts['scenes'][split]} scenes, {counts['chips'][split]} chips, "
            f"{counts['boxes'][split]} boxes -> {out / split}, {out / f'{split}.json'}"
        )
    if counts["unreadable_scenes"]:
        print(f"{len(counts['unreadable_scenes'])} unreadable scene(s) skipped")
