"""`scalemae-det predict`: detection over many scenes, one output file per scene (scalemae_det.runtime).

Only typer is imported at module level; onnxruntime, rasterio and rich are imported when the
command runs, so the CLI starts fast and never needs torch.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from scalemae_det.base import checks
from scalemae_det.base.errors import UserError, dashed_flag
from scalemae_det.runtime.inputs import expand_scenes
from scalemae_det.runtime.shards import parse_shard, select


def predict(
    scenes: list[str] = typer.Argument(..., help="GeoTIFF scenes: files, directories or glob patterns"),
    model: Path = typer.Option(..., "--model", help="exported scalemae-det ONNX model"),
    out: Path = typer.Option(..., "--out", help="output directory (one file per scene)"),
    provider: str = typer.Option("auto", "--provider", help="auto | tensorrt | cuda | cpu"),
    overlap: float = typer.Option(0.2, "--overlap", help="fraction of a tile shared with its neighbour"),
    batch: int = typer.Option(None, "--batch", help="tiles per run", show_default="the model's"),
    score_threshold: float = typer.Option(None, "--score-threshold", show_default="the model's",
                                          help="in [0, 1]; not below the model's, which its graph applies"),
    bands: str = typer.Option(None, "--bands", help="1 or 3 band numbers, 1-based, e.g. 4,3,2",
                              show_default="RGB by colour interpretation, else the first three"),
    scale: str = typer.Option("auto", "--scale", help="auto (2-98% stretch; uint8 /255) or MIN,MAX"),
    gsd_mode: str = typer.Option("resample", "--gsd-mode", help="resample to the model's GSD, or as-is"),
    crs: str = typer.Option("wgs84", "--crs", help="wgs84 (RFC 7946) or native (the scene's CRS)"),
    fmt: str = typer.Option("geojson", "--format", help="geojson | coco | csv | gpkg"),
    match: str = typer.Option("ios", "--match", help="seam merging: ios (intersection over smaller) or iou"),
    preview: Path = typer.Option(None, "--preview", help="quicklook PNG; with several scenes put {scene} in the name"),
    overwrite: bool = typer.Option(False, "--overwrite", help="redo scenes whose output exists"),
    threads: int = typer.Option(None, "--threads", help="CPU threads for onnxruntime", show_default="all"),
    shard: str = typer.Option(None, "--shard", help="K/N: run only shard K of N (by scene name), or auto "
                              "(Slurm array task, Kubernetes completion index)"),
    shard_count: int = typer.Option(None, "--shard-count", help="N for --shard auto in a Kubernetes Indexed Job "
                                    "(its completions)"),
) -> None:
    """Detect objects in GeoTIFF scenes with an exported ONNX model (no PyTorch needed)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from scalemae_det.runtime.detector import Detector
    from scalemae_det.runtime.merge import METRICS
    from scalemae_det.runtime.outputs import CRS_MODES, FORMATS, output_path, write
    from scalemae_det.base.digest import sha256_file
    from scalemae_det.runtime.preview import write_preview
    from scalemae_det.runtime.records import RunRecord, footprint
    from scalemae_det.runtime.vector import pyogrio
    from scalemae_det.runtime.scene import check_options
    from scalemae_det.runtime.session import CHOICES as PROVIDERS

    # every option and output path, before the model is loaded or a scene read
    checks.choice("format", fmt, FORMATS)
    checks.choice("crs", crs, CRS_MODES)
    checks.choice("match", match, METRICS)
    checks.choice("provider", provider, PROVIDERS)
    check_options(gsd_mode, overlap)  # once here, not once per scene
    checks.number("batch", batch, lo=1, integer=True)
    checks.number("threads", threads, lo=1, integer=True)
    checks.number("score_threshold", score_threshold, lo=0, hi=1)
    band_list, value_scale = checks.bands("bands", bands), checks.value_scale("scale", scale)
    paths, problems = expand_scenes(scenes)
    this_shard = parse_shard(shard, shard_count)
    if fmt == "gpkg":
        pyogrio()  # installed, or one error line before any work
    if preview and len(paths) > 1 and "{scene}" not in str(preview):
        raise UserError(f"--preview {preview}: with several scenes the name needs {{scene}}")
    targets = {p: output_path(out, p, fmt) for p in paths}
    writers: dict[Path, Path] = {}  # output -> the first scene writing it
    for p, target in targets.items():
        clash = writers.setdefault(target, p)
        if clash != p:
            raise UserError(f"{p} and {clash} would both write {target}; run them separately")
    job_names, paths = [p.name for p in paths], select(paths, this_shard)  # clashes checked over the whole job
    targets = {p: targets[p] for p in paths}
    previews = {p: Path(str(preview).replace("{scene}", p.stem)) for p in paths} if preview else {}
    for path in previews.values():
        checks.output_file(path, "preview")
    checks.output_dir(out, "out")

    console = Console(stderr=True, soft_wrap=True, highlight=False)
    say = lambda text, style=None: console.print(text, style=style, markup=False)  # noqa: E731
    for line in problems:
        say(f"error: {line}", "red")
    detector = Detector(model, provider, batch, threads)
    detector.threshold(score_threshold)  # one below the graph's own would silently change nothing
    meta = detector.metadata
    note = f" ({detector.session.note})" if detector.session.note else ""
    say(f"{model.name}: tile {meta.tile}, batch {detector.session.batch}, GSD {meta.gsd:g} m; "
        f"onnxruntime runs on {', '.join(detector.session.providers)}{note}")
    if this_shard.count > 1:
        say(f"shard {this_shard} ({this_shard.source}): {len(paths)} of {len(job_names)} scenes")
    record = RunRecord(out, this_shard, job_names, [p.name for p in paths], model, sha256_file(model),
                       meta.class_names, detector.provider, fmt)
    failed = len(problems)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with record, Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        all_scenes = progress.add_task("scenes", total=len(paths))
        tiles = progress.add_task("tiles", total=None)
        for path, target in targets.items():
            if target.exists() and not overwrite:
                say(f"{path.name}: skipped, {target} exists (--overwrite to redo)")
                record.scene(path, target, "skipped")
                progress.advance(all_scenes)
                continue
            progress.reset(tiles, total=None, description=f"tiles of {path.name}")
            began = time.perf_counter()
            try:
                result = detector.detect_scene(
                    path, overlap=overlap, score_threshold=score_threshold, bands=band_list, scale=value_scale,
                    gsd_mode=gsd_mode, match=match,
                    progress=lambda done, total: progress.update(tiles, completed=done, total=total))
                for line in result.notes:
                    say(f"warning: {path.name}: {line}", "yellow")
                if preview:  # before the output, so an existing output means the preview is there too
                    write_preview(result, previews[path])
                write(result, target, fmt, crs)
            except (UserError, OSError) as exc:
                reason = (exc if isinstance(exc, UserError) else checks.write_failed(target, exc)).render(dashed_flag)
                say(f"error: {reason}", "red")
                failed += 1
                record.scene(path, target, "failed", seconds=time.perf_counter() - began, reason=reason)
            else:
                gsd = f"GSD {result.scene.gsd:.3g} m" if result.scene.gsd else "no GSD"
                if result.scene.factor != 1:
                    gsd += f" (resampled {1 / result.scene.factor:.3g}x)"
                rate = result.tiles_run / result.seconds if result.seconds else 0.0
                say(f"{path.name}: {len(result.detections)} detections, {result.tiles_run} tiles run, "
                    f"{result.tiles_skipped} skipped, {rate:.1f} tiles/s, {gsd}, {result.provider} -> {target}")
                record.scene(path, target, "ok", detections=len(result.detections), tiles=result.tiles_run,
                             seconds=result.seconds, provider=result.provider, footprint=footprint(result.scene))
            progress.advance(all_scenes)
    if failed:
        say(f"{failed} of {len(paths) + len(problems)} inputs failed")
        raise typer.Exit(1)


__all__ = ["predict"]
