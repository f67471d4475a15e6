"""A predict job: many scenes, one output per scene, a run record, skip-done and shards.

The job is planned in full before the model is loaded or a scene read (every option and output
path checked, output names decided over the whole job so two scenes never write one file, this
shard's share chosen by scene name), then each scene runs in turn:

1. a scene whose output exists is skipped (and recorded so) unless `overwrite`;
2. otherwise it is detected, its preview written first, then its output, so an existing output
   means everything of that scene is there;
3. a problem with one scene is one error line and a `failed` record; the others go on, and a
   rerun of the same command does only what is missing;
4. with an area of interest (`aoi`), only the tiles meeting it are read and run and only the
   detections centred inside it kept; a scene it does not touch is skipped, recorded so, with no
   output (a rerun looks again);
5. with several models, each runs over every scene and their detections are fused
   (runtime.ensemble); the record names every model, and its hash is of theirs in order.

Scenes are runtime.inputs.Source: files, URLs and STAC items alike, named by their file name (a
URL's without its query) or item id; messages and records show a URL without its credentials.

Only the standard library and rich are imported at module level; onnxruntime and rasterio come
with the detector, so nothing here needs torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from scalemae_det.base import checks
from scalemae_det.base.errors import (
    InputError,
    ParameterError,
    Spelling,
    UserError,
    python_name,
    spelled,
)
from scalemae_det.base.metadata import DEFAULT_TTA_IOU
from scalemae_det.runtime.inputs import Source, expand_scenes
from scalemae_det.runtime.shards import Shard, parse_shard, select


@dataclass(frozen=True)
class SceneOptions:
    """What applies to every scene of the run, checked."""

    overlap: float
    score_threshold: float | None
    bands: list[int] | None
    scale: str | tuple[float, float]
    gsd_mode: str
    match: str
    fmt: str
    crs: str
    overwrite: bool
    aoi: Path | None = None  # a vector file: the area of interest
    stac_asset: str | None = None  # the asset of STAC items to read (runtime.stac's default)
    tta: str = "none"  # test-time views fused per tile (runtime.tta.VIEWS)
    tta_iou: float = DEFAULT_TTA_IOU  # the IoU over which they fuse
    ensemble_iou: float = DEFAULT_TTA_IOU  # the IoU over which several models' detections fuse


@dataclass
class Job:
    """This process's share of the scenes, where each one's outputs go, and the inputs already
    refused."""

    targets: dict[Source, Path]  # scene -> output, this shard's scenes only
    previews: dict[Source, Path]  # scene -> quicklook PNG, when asked for
    problems: list[str]  # inputs that named no raster, one line each
    job_names: list[str]  # every scene of the whole job, for the run record
    shard: Shard
    out: Path
    area: object = None  # runtime.aoi.Area, read from `aoi` once for every scene


def plan_job(
    scenes: list[str],
    out: Path,
    options: SceneOptions,
    preview: Path | None,
    shard: str | None,
    shard_count: int | None,
    *,
    provider: str,
    batch: int | None,
    threads: int | None,
) -> Job:
    """Every option and output path checked, before the model is loaded or a scene read."""
    from scalemae_det.runtime.ensemble import check as check_ensemble
    from scalemae_det.runtime.outputs import FORMATS, output_crs, output_path
    from scalemae_det.runtime.scene import check_tiling_options
    from scalemae_det.runtime.seams import METRICS
    from scalemae_det.runtime.session import CHOICES as PROVIDERS
    from scalemae_det.runtime.tta import check as check_tta
    from scalemae_det.runtime.vector import pyogrio

    checks.choice("format", options.fmt, FORMATS)
    output_crs(options.crs)
    checks.choice("match", options.match, METRICS)
    checks.choice("provider", provider, PROVIDERS)
    check_tiling_options(options.gsd_mode, options.overlap)  # once here, not once per scene
    checks.number("batch", batch, lo=1, integer=True)
    checks.number("threads", threads, lo=1, integer=True)
    checks.number("score_threshold", options.score_threshold, lo=0, hi=1)
    check_tta(options.tta, options.tta_iou)
    check_ensemble(options.ensemble_iou)
    if options.stac_asset is not None and not options.stac_asset.strip():
        raise ParameterError("stac_asset", "needs an asset name", value=options.stac_asset)
    area = None
    if options.aoi is not None:
        from scalemae_det.runtime.aoi import read_area

        area = read_area(options.aoi)  # readable, with a CRS and polygons, before any scene
    paths, problems = expand_scenes(scenes, options.stac_asset)
    this_shard = parse_shard(shard, shard_count)
    if options.fmt == "gpkg":
        pyogrio()  # installed, or one error line before any work
    if preview and len(paths) > 1 and "{scene}" not in str(preview):
        raise ParameterError(
            "preview", "with several scenes the name needs {scene}", value=str(preview)
        )
    targets = {p: output_path(out, p, options.fmt) for p in paths}
    writers: dict[Path, Source] = {}  # output -> the first scene writing it
    for p, target in targets.items():  # over the whole job, not only this shard
        clash = writers.setdefault(target, p)
        if clash != p:
            raise InputError(f"{p} and {clash} would both write {target}; run them separately")
    mine = select(paths, this_shard)
    previews = {p: Path(str(preview).replace("{scene}", p.stem)) for p in mine} if preview else {}
    for path in previews.values():
        checks.output_file(path, "preview")
    checks.output_dir(out, "out")
    return Job(
        {p: targets[p] for p in mine},
        previews,
        problems,
        [p.name for p in paths],
        this_shard,
        out,
        area,
    )


def describe_model(models: list[Path], detector, job: Job, say, options: SceneOptions) -> None:
    from scalemae_det.runtime.tta import VIEWS

    for model, member in zip(models, getattr(detector, "members", [detector])):
        meta, session = member.metadata, member.session
        note = f" ({session.note})" if session.note else ""
        say(
            f"{model.name}: tile {meta.tile}, batch {session.batch}, GSD {meta.gsd:g} m"
            f"{meta.box_head_passes}; "
            f"onnxruntime runs it in {meta.precision} on {', '.join(session.providers)}{note}"
        )
    if len(models) > 1:
        say(
            f"ensemble of {len(models)} models: each runs over every scene, their detections "
            f"fused where IoU > {options.ensemble_iou:g}"
        )
    if options.tta != "none":
        views = len(VIEWS[options.tta])
        say(
            f"test-time views {options.tta}: {views} runs a tile, fused where IoU > "
            f"{options.tta_iou:g}"
        )
    if job.shard.count > 1:
        say(
            f"shard {job.shard} ({job.shard.source}): "
            f"{len(job.targets)} of {len(job.job_names)} scenes"
        )


def run_job(
    job: Job,
    models: list[Path],
    detector,
    options: SceneOptions,
    console,
    say,
    spell: Spelling = python_name,
) -> int:
    """Every scene of the job in turn, each recorded; returns how many failed. `spell` writes the
    parameters named in messages as the caller knows them (a flag for the CLI)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from scalemae_det.base.digest import sha256_files
    from scalemae_det.runtime.records import RunRecord

    record = RunRecord(
        job.out,
        job.shard,
        job.job_names,
        [p.name for p in job.targets],
        models[0] if len(models) == 1 else models,
        sha256_files(models),
        detector.metadata.class_names,
        detector.provider,
        options.fmt,
    )
    failed = 0
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ]
    with (
        record,
        Progress(
            *columns, console=console, transient=True, disable=not console.is_terminal
        ) as progress,
    ):
        all_scenes = progress.add_task("scenes", total=len(job.targets))
        tiles = progress.add_task("tiles", total=None)
        for path, target in job.targets.items():
            if target.exists() and not options.overwrite:
                say(f"{path.name}: skipped, {target} exists ({spell('overwrite')} to redo)")
                record.scene(path, target, "skipped")
            else:
                progress.reset(tiles, total=None, description=f"tiles of {path.name}")
                on_tiles = lambda done, total: progress.update(tiles, completed=done, total=total)  # noqa: E731
                failed += not run_scene(
                    path,
                    target,
                    job.previews.get(path),
                    detector,
                    options,
                    record,
                    on_tiles,
                    say,
                    spell,
                    area=job.area,
                )
            progress.advance(all_scenes)
    return failed


def run_scene(
    path: Source,
    target: Path,
    preview: Path | None,
    detector,
    options: SceneOptions,
    record,
    on_tiles,
    say,
    spell: Spelling = python_name,
    *,
    area=None,
) -> bool:
    """Detect over one scene (within `area`, a runtime.aoi.Area, when given) and write its outputs;
    a problem is one error line and a failed record."""
    from scalemae_det.runtime.outputs import output_crs, write
    from scalemae_det.runtime.preview import write_preview
    from scalemae_det.runtime.records import footprint

    began = time.perf_counter()
    try:
        result = detector.detect_scene(
            path,
            overlap=options.overlap,
            score_threshold=options.score_threshold,
            bands=options.bands,
            scale=options.scale,
            gsd_mode=options.gsd_mode,
            match=options.match,
            tta=options.tta,
            tta_iou=options.tta_iou,
            progress=on_tiles,
            area=area,
        )
        for line in result.notes:
            say(f"warning: {path.name}: {spelled(line, spell)}", "yellow")
        if result.scene.outside_area:
            reason = f"outside the area of interest {area.path}: no tile of it was read"
            say(f"{path.name}: skipped, {reason}")
            record.scene(
                path,
                target,
                "skipped",
                seconds=time.perf_counter() - began,
                reason=reason,
                tiles_outside=result.tiles_outside,
            )
            return True
        if preview:  # before the output, so an existing output means the preview is there too
            write_preview(result, preview)
        write(result, target, options.fmt, output_crs(options.crs))
    except (UserError, OSError) as exc:
        reason = (exc if isinstance(exc, UserError) else checks.write_failed(target, exc)).render(
            spell
        )
        say(f"error: {reason}", "red")
        record.scene(path, target, "failed", seconds=time.perf_counter() - began, reason=reason)
        return False
    gsd = f"GSD {result.scene.gsd:.3g} m" if result.scene.gsd else "no GSD"
    if result.scene.factor != 1:
        gsd += f" (resampled {1 / result.scene.factor:.3g}x)"
    rate = result.tiles_run / result.seconds if result.seconds else 0.0
    outside = f", {result.tiles_outside} outside the area" if area is not None else ""
    say(
        f"{path.name}: {len(result.detections)} detections, {result.tiles_run} tiles run, "
        f"{result.tiles_skipped} skipped{outside}, {rate:.1f} tiles/s, {gsd}, {result.provider} "
        f"-> {target}"
    )
    record.scene(
        path,
        target,
        "ok",
        detections=len(result.detections),
        tiles=result.tiles_run,
        seconds=result.seconds,
        provider=result.provider,
        footprint=footprint(result.scene),
        tiles_outside=result.tiles_outside if area is not None else None,
    )
    return True


def predict_job(
    scenes: list[str],
    model: Path | list[Path],
    out: Path,
    options: SceneOptions,
    *,
    preview: Path | None = None,
    shard: str | None = None,
    shard_count: int | None = None,
    provider: str = "auto",
    batch: int | None = None,
    threads: int | None = None,
    console=None,
    spell: Spelling = python_name,
) -> int:
    """Plan the job, load the model (or models: rule 5), run this shard's scenes; returns how
    many inputs failed (inputs that named no raster included). `console` is a rich Console for
    progress and lines (stderr when None)."""
    from rich.console import Console

    from scalemae_det.runtime.detector import Detector
    from scalemae_det.runtime.ensemble import Ensemble

    models = [Path(m) for m in model] if isinstance(model, (list, tuple)) else [Path(model)]
    if not models:
        raise ParameterError("model", "needs at least one model file")

    job = plan_job(
        scenes,
        out,
        options,
        preview,
        shard,
        shard_count,
        provider=provider,
        batch=batch,
        threads=threads,
    )
    console = console or Console(stderr=True, soft_wrap=True, highlight=False)

    def say(text, style=None):
        console.print(text, style=style, markup=False)

    for line in job.problems:
        say(f"error: {line}", "red")
    if options.tta == "none" and options.tta_iou != DEFAULT_TTA_IOU:
        say(
            f"warning: {spell('tta_iou')} {options.tta_iou:g} has no effect: there are no "
            f"test-time views to fuse without {spell('tta')}",
            "yellow",
        )
    if len(models) == 1 and options.ensemble_iou != DEFAULT_TTA_IOU:
        say(
            f"warning: {spell('ensemble_iou')} {options.ensemble_iou:g} has no effect: there is "
            f"one {spell('model')}, nothing to fuse it with",
            "yellow",
        )
    members = [Detector(m, provider, batch, threads) for m in models]
    detector = members[0] if len(members) == 1 else Ensemble(members, options.ensemble_iou)
    detector.threshold(options.score_threshold)  # one below the graph's own would change nothing
    describe_model(models, detector, job, say, options)
    failed = len(job.problems) + run_job(job, models, detector, options, console, say, spell)
    if failed:
        say(f"{failed} of {len(job.targets) + len(job.problems)} inputs failed")
    return failed
