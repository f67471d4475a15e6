"""`scalemae-det demo`: the whole toolchain, honestly, on a scene nobody has seen.

Generate a synthetic scene (a seed the bundled model was not trained on), export the bundled
checkpoint to ONNX at the scene's GSD (validated against PyTorch), run the torch-free runtime
over the scene, and score the detections against the scene's ground truth.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scalemae_det.base import checks
from scalemae_det.base.atomic import atomic_path
from scalemae_det.base.errors import ParameterError

BUNDLED = Path(__file__).parent / "assets" / "vit_tiny_synthetic.pth"
DEMO_SEED = 2026  # the bundled model's chips used seeds 1 (train) and 2 (val)


@contextmanager
def _stage(console: Console, name: str, timings: dict[str, float]):
    start = time.perf_counter()
    with console.status(f"{name}..."):
        yield
    timings[name] = time.perf_counter() - start
    console.print(f"[green]done[/] {name} ({timings[name]:.1f} s)")


MIN_SIZE = 256


def check_demo(out: Path, size: int, gsd: float, tile: int, checkpoint: Path) -> None:
    """Everything the demo's stages would refuse, before the first of them runs; creates `out`."""
    from scalemae_det.export.options import ExportSpec

    checks.number("size", size, lo=MIN_SIZE, integer=True)
    ExportSpec(gsd=gsd, tile=tile, batch=1).check()
    if not Path(checkpoint).is_file():
        raise ParameterError("checkpoint", "no such checkpoint file", value=str(checkpoint))
    checks.output_dir(out, "out")
    for name in (
        "report.json",
        "report.md",
    ):  # a run that fails part-way must not leave an earlier run's report
        (out / name).unlink(missing_ok=True)


def run_demo(
    out: Path,
    *,
    size: int = 3072,
    gsd: float = 0.5,
    seed: int = DEMO_SEED,
    tile: int = 512,
    checkpoint: Path = BUNDLED,
    console: Console | None = None,
) -> dict:
    """Run every stage into `out`; returns the report (also written as report.json and
    report.md)."""
    from scalemae_det.export.onnx_export import export_onnx
    from scalemae_det.export.options import ExportSpec
    from scalemae_det.metrics.coco_ap import evaluate_detections, scene_results
    from scalemae_det.runtime import Detector, outputs
    from scalemae_det.runtime.preview import write_preview
    from scalemae_det.synthetic import write_scene

    check_demo(out, size, gsd, tile, checkpoint)
    console = console or Console(stderr=True)
    timings: dict[str, float] = {}
    scene_path, model_path = out / "scene.tif", out / "model.onnx"
    with _stage(console, f"scene: {size} x {size} px at {gsd} m, seed {seed}", timings):
        gt = write_scene(scene_path, size, seed=seed, gsd=gsd, nodata_collar=True)
    with _stage(console, f"export: {checkpoint.name} -> ONNX at {gsd} m, tile {tile}", timings):
        exported = export_onnx(checkpoint, model_path, ExportSpec(gsd=gsd, tile=tile, batch=1))
    with _stage(console, "predict: ONNX Runtime over the scene", timings):
        detector = Detector(model_path)
        result = detector.detect_scene(scene_path)
        outputs.write(result, out / "detections.geojson", "geojson")
        write_preview(result, out / "preview.png")
    with _stage(console, "evaluate: AP@0.5 against the scene's ground truth", timings):
        dets = scene_results(
            result, gt["images"][0]["id"], gt["categories"], detector.metadata.class_names
        )
        metrics = evaluate_detections(out / "scene.json", dets, max_dets=max(len(dets), 100))
    report = {
        "scene": {
            "path": str(scene_path),
            "size": size,
            "gsd": gsd,
            "seed": seed,
            "objects": len(gt["annotations"]),
        },
        "model": {
            "checkpoint": str(checkpoint),
            "onnx": str(model_path),
            "size_mib": exported.size_bytes / 2**20,
            "parity": exported.report.summary() if exported.report else None,
        },
        "predict": {
            "provider": result.provider,
            "tiles_run": result.tiles_run,
            "tiles_skipped": result.tiles_skipped,
            "detections": len(result.detections),
            "seconds": result.seconds,
            "seconds_in_session_run": result.run_seconds,
        },
        "AP50": metrics["AP50"],
        "AP": metrics["AP"],
        "AP50_per_class": {c["name"]: c["AP50"] for c in metrics["per_class"]},
        "seconds": timings,
        "files": {
            name: str(out / name)
            for name in (
                "scene.tif",
                "scene.json",
                "model.onnx",
                "detections.geojson",
                "preview.png",
                "report.json",
                "report.md",
            )
        },
    }
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(_markdown(report))
    _print(console, report)
    return report


def _markdown(report: dict) -> str:
    lines = [
        "# scalemae-det demo",
        "",
        f"Scene: {report['scene']['size']} px square at {report['scene']['gsd']} m, "
        f"{report['scene']['objects']} objects (seed {report['scene']['seed']}).",
        "",
        f"Detections: {report['predict']['detections']} on {report['predict']['tiles_run']} tiles "
        f"({report['predict']['tiles_skipped']} nodata tiles skipped), provider "
        f"{report['predict']['provider']}.",
        "",
        "| class | AP@0.5 |",
        "|---|---|",
    ]
    lines += [f"| {name} | {ap:.3f} |" for name, ap in report["AP50_per_class"].items()]
    lines += [f"| **mean** | **{report['AP50']:.3f}** |", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name.split(':')[0]} | {s:.1f} |" for name, s in report["seconds"].items()]
    return "\n".join(lines) + "\n"


def _print(console: Console, report: dict) -> None:
    table = Table(title="AP@0.5 on the demo scene")
    table.add_column("class")
    table.add_column("AP@0.5", justify="right")
    for name, ap in report["AP50_per_class"].items():
        table.add_row(name, f"{ap:.3f}")
    table.add_row("[bold]mean[/]", f"[bold]{report['AP50']:.3f}[/]")
    console.print(table)
    console.print(
        f"{report['predict']['detections']} detections, {report['predict']['tiles_run']} tiles "
        "run, "
        f"{report['predict']['tiles_skipped']} skipped, on {report['predict']['provider']}; "
        f"total {sum(report['seconds'].values()):.0f} s"
    )
    for name, path in report["files"].items():
        console.print(f"  {name:<20} {path}")
