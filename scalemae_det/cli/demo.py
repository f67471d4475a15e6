"""`scalemae-det demo`: scene, export, predict and score in one go (scalemae_det.demo)."""

from __future__ import annotations

from pathlib import Path

import typer

from scalemae_det.demo import BUNDLED, DEMO_SEED, run_demo


def demo_command(
    out: Path = typer.Option(
        Path("demo_out"), "-o", "--out", help="folder for the scene, model, detections and report"
    ),
    size: int = typer.Option(3072, help="scene side in pixels"),
    seed: int = typer.Option(
        DEMO_SEED, help="scene seed (the bundled model was trained on seeds 1 and 2)"
    ),
    tile: int = typer.Option(512, help="tile side of the exported model, a multiple of 32"),
    checkpoint: Path = typer.Option(
        BUNDLED, help="detector checkpoint to demonstrate", show_default="the bundled tiny model"
    ),
) -> None:
    """Generate a scene, export the bundled model, detect over the scene, and score the result."""
    run_demo(out, size=size, seed=seed, tile=tile, checkpoint=checkpoint)
