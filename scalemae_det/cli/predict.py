"""`scalemae-det predict`: detection over many scenes, one output file per scene (scalemae_det.runtime).

Only typer is imported at module level; onnxruntime, rasterio and rich are imported when the
command runs, so the CLI starts fast and never needs torch.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from scalemae_det.base.errors import UserError
from scalemae_det.runtime.inputs import expand_scenes
from scalemae_det.runtime.shards import parse_shard, select

def _parse_bands(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise UserError(f"--bands: expected comma-separated band numbers, got {text!r}") from None


def _parse_scale(text: str) -> str | tuple[float, float]:
    if text == "auto":
        return text
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--scale: expected auto or MIN,MAX, got {text!r}") from None
    return lo, hi


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise UserError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


def predict(
    scenes: list[str] = typer.Argument(..., help="GeoTIFF scenes: files, directories or glob patterns"),
    model: Path = typer.Option(..., "--model", help="exported scalemae-det ONNX model"),
    out: Path = typer.Option(..., "--out", help="output directory (one file per scene)"),
    provider: str = typer.Option("auto", "--provider", help="auto | tensorrt | cuda | cpu"),
    overlap: float = typer.Option(0.2, "--overlap", help="fraction of a tile shared with its neighbour"),
    batch: int = typer.Option(None, "--batch", help="tiles per run (default: the model's)"),
    score_threshold: float = typer.Option(None, "--score-threshold", help="default: the model's"),
    bands: str = typer.Option(None, "--bands", help="1 or 3 band numbers, e.g. 4,3,2 (default: RGB or the first three)"),
    scale: str = typer.Option("auto", "--scale", help="auto (2-98% stretch; uint8 /255) or MIN,MAX"),
    gsd_mode: str = typer.Option("resample", "--gsd-mode", help="resample to the model's GSD, or as-is"),
    crs: str = typer.Option("wgs84", "--crs", help="wgs84 (RFC 7946) or native (the scene's CRS)"),
    fmt: str = typer.Option("geojson", "--format", help="geojson | coco | csv | gpkg"),
    match: str = typer.Option("ios", "--match", help="seam merging: ios (intersection over smaller) or iou"),
    preview: Path = typer.Option(None, "--preview", help="quicklook PNG; with several scenes put {scene} in the name"),
    overwrite: bool = typer.Option(False, "--overwrite", help="redo scenes whose output exists"),
    threads: int = typer.Option(None, "--threads", help="CPU threads for onnxruntime (default: all)"),
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

    _check_choice("--format", fmt, FORMATS)
    _check_choice("--crs", crs, CRS_MODES)
    check_options(gsd_mode, overlap)  # once here, not once per scene
    _check_choice("--match", match, METRICS)
    band_list, value_scale = _parse_bands(bands), _parse_scale(scale)
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
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output directory ({exc.strerror})") from None

    console = Console(stderr=True, soft_wrap=True, highlight=False)
    say = lambda text, style=None: console.print(text, style=style, markup=False)  # noqa: E731
    for line in problems:
        say(f"error: {line}", "red")
    detector = Detector(model, provider, batch, threads)
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
                    write_preview(result, str(preview).replace("{scene}", path.stem))
                write(result, target, fmt, crs)
            except (UserError, OSError) as exc:
                reason = (str(exc) if isinstance(exc, UserError)
                          else f"{exc.filename or target}: cannot write ({exc.strerror})")
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
