"""`scalemae-det evaluate`: AP of a trained checkpoint on a COCO-format dataset (torch imported on
use)."""

from __future__ import annotations

from pathlib import Path

import typer

from scalemae_det.base import checks
from scalemae_det.base.errors import InputError
from scalemae_det.cli.options import bands_option

DEFAULT_OUTPUT = "CHECKPOINT_NAME.eval.json in the current folder"


def default_output(checkpoint: Path) -> Path:
    """The metrics file when -o is not given: in the current folder, never beside the checkpoint,
    which may
    be the bundled model inside the installed package or a read-only model store."""
    return Path(f"{checkpoint.stem}.eval.json")


def evaluate_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="a checkpoint written by train.py"),
    image_dir: Path = typer.Option(..., "--image-dir", help="folder of the images"),
    label_file: Path = typer.Option(..., "--label-file", help="COCO JSON ground truth"),
    out: Path = typer.Option(None, "-o", "--out", help="metrics JSON", show_default=DEFAULT_OUTPUT),
    detections: Path = typer.Option(
        None, "--detections", help="also write the detections (COCO results JSON)"
    ),
    input_size: int = typer.Option(
        None,
        "--input-size",
        help="evaluation size, px",
        show_default="the training --input_size",
    ),
    batch_size: int = typer.Option(1, "--batch-size"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    amp: str = typer.Option("auto", help="auto (bf16 on a GPU that has it), bf16, fp16 or off"),
    num_workers: int = typer.Option(2, "--num-workers"),
    bands: str = bands_option("those the checkpoint was trained with"),
    ignore_category: list[int] = typer.Option(
        [], "--ignore-category", help="category id left out of the xView mean (repeatable)"
    ),
    official_counting: bool = typer.Option(
        False,
        "--official-counting",
        help="xView AP with the official scorer's counting (ground truth only in "
        "images where its class was predicted), to compare with the leaderboard; default: every "
        "box counted",
    ),
    scene_level: bool = typer.Option(
        False,
        "--scene-level",
        help="score whole scenes: chip detections stitched into their scenes (the chip "
        "records' scene, x0, y0) and merged at the seams as predict merges tiles",
    ),
    scene_labels: Path = typer.Option(
        None,
        "--scene-labels",
        help="scene-pixel ground truth for --scene-level [default: the label file's "
        "NAME_scenes.json, as prepare-xview writes it]",
    ),
) -> None:
    """Score a checkpoint: COCO AP, AP50, AP75, AP by size, per-class AP50 and the xView metric.

    Runs under torchrun too (`torchrun --nproc_per_node=N $(which scalemae-det) evaluate ...`):
    each process predicts a share of the images and the first one scores them all.
    """
    band_list = checks.bands("bands", bands)
    from scalemae_det.engine.evaluator import evaluate_checkpoint

    if scene_labels is not None and not scene_level:
        raise InputError("--scene-labels goes with --scene-level")
    if scene_level and scene_labels is None:
        scene_labels = label_file.with_name(f"{label_file.stem}_scenes.json")
    evaluate_checkpoint(
        checkpoint,
        image_dir,
        label_file,
        scene_labels=scene_labels,
        xview_counting="official" if official_counting else "corrected",
        out=out or default_output(checkpoint),
        detections=detections,
        input_size=input_size,
        batch_size=batch_size,
        device=device,
        amp=amp,
        num_workers=num_workers,
        bands=band_list,
        ignore_category_ids=ignore_category,
    )
