"""`scalemae-det export`: a detector checkpoint to ONNX (this project's contract, or the deepness
flavour QGIS Deepness and GeoDeep run) and/or TorchScript. torch is imported inside the command."""

from __future__ import annotations

from pathlib import Path

import typer

from scalemae_det.base import checks
from scalemae_det.base.errors import InputError
from scalemae_det.base.metadata import DEFAULT_OVERLAP
from scalemae_det.export.options import (
    DEFAULT_BATCH,
    DEFAULT_TILE,
    MAX_OPSET,
    MAX_REFINE_BOXES,
    MIN_OPSET,
    ExportSpec,
)

DEFAULTS = ExportSpec()
FORMATS = ("onnx", "torchscript", "deepness", "all")


def _outputs(out: Path, fmt: str) -> list[tuple[str, Path]]:
    """(exporter, path) of each file: deepness is the ONNX exporter's deepness flavour."""
    if fmt == "all":
        return [("onnx", out.with_suffix(".onnx")), ("torchscript", out.with_suffix(".pt"))]
    return [("onnx" if fmt == "deepness" else fmt, out)]


def export_command(
    checkpoint: Path = typer.Argument(..., help="detector checkpoint written by train.py"),
    out: Path = typer.Option(
        ..., "-o", "--out", help="output file; with --format all, its .onnx and .pt siblings"
    ),
    fmt: str = typer.Option(
        FORMATS[0],
        "--format",
        help="onnx (main path, what predict runs), torchscript, deepness (an ONNX model for QGIS "
        "Deepness and GeoDeep, batch 1; see docs/gis.md), or all (onnx and torchscript)",
    ),
    gsd: float | None = typer.Option(
        None,
        help="metres per pixel the model will run at; the embedding is baked in",
        show_default="the checkpoint's training GSD",
    ),
    tile: int | None = typer.Option(
        DEFAULTS.tile,
        help="square tile side in pixels, a multiple of 32 [default: the size the checkpoint was "
        f"trained at, rounded up to a multiple of 32; {DEFAULT_TILE} if it records none]",
        show_default=False,
    ),
    batch: int | None = typer.Option(
        None,
        help="fixed batch size of the graph",
        show_default=f"{DEFAULT_BATCH}; 1 with --format deepness, which takes only 1",
    ),
    overlap: float | None = typer.Option(
        None,
        help="--format deepness: the tile overlap (a fraction, as predict's) written into the "
        "model for Deepness and GeoDeep, which read it as a whole percent",
        show_default=str(DEFAULT_OVERLAP),
    ),
    max_detections: int | None = typer.Option(
        None,
        help="rows per tile in the padded outputs",
        show_default="the checkpoint config's, 300",
    ),
    score_threshold: float | None = typer.Option(
        None, help="applied in the graph", show_default="the checkpoint config's, 0.05"
    ),
    refine_boxes: int = typer.Option(
        DEFAULTS.refine_boxes,
        "--refine-boxes",
        help=f"run the box head this many more times (0-{MAX_REFINE_BOXES}) on its own boxes, "
        "each pass from the last one's boxes, and average the passes' class scores (iterative box "
        "regression; see docs/benchmarks-real.md)",
    ),
    precision: str = typer.Option(
        DEFAULTS.precision,
        "--precision",
        help="fp32; fp16 (half-precision backbone, float32 heads and box decoding, parity reported "
        "against float32); or int8 (static QDQ quantization calibrated on --calibration, "
        "accepted only when its detections agree with float32's on held-out tiles; ONNX "
        "only)",
    ),
    fp16: bool = typer.Option(
        False, "--fp16", help="deprecated: the same as --precision fp16", hidden=True
    ),
    calibration: list[str] = typer.Option(
        [],
        "--calibration",
        help="int8: scenes or chips to calibrate on (files, directories of rasters, globs, URLs, "
        "STAC items; repeat the option), read as predict reads them at the export's GSD and tile",
    ),
    calibration_tiles: int = typer.Option(
        DEFAULTS.calibration_tiles,
        "--calibration-tiles",
        help="int8: tiles to calibrate on; a quarter as many more, held out, judge the result",
    ),
    calibration_method: str = typer.Option(
        DEFAULTS.calibration_method,
        "--calibration-method",
        help="int8: minmax, entropy or percentile",
    ),
    int8_min_agreement: float = typer.Option(
        DEFAULTS.int8_min_agreement,
        "--int8-min-agreement",
        help="int8: precision and recall of the int8 detections against float32's (same class, IoU "
        ">= 0.5) must both reach this",
    ),
    int8_labels: Path | None = typer.Option(
        None,
        "--int8-labels",
        help="int8: a COCO label file; with --int8-images, AP50 of both graphs goes into the "
        "report",
    ),
    int8_images: Path | None = typer.Option(
        None, "--int8-images", help="int8: the image folder of --int8-labels"
    ),
    opset: int = typer.Option(DEFAULTS.opset, help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET}"),
    validate: bool = typer.Option(
        DEFAULTS.validate,
        "--validate/--no-validate",
        help="run the export and PyTorch on generated tiles and fail on a mismatch; the report "
        "goes beside the model as NAME.parity.json",
    ),
    simplify: bool = typer.Option(
        DEFAULTS.simplify,
        "--simplify/--no-simplify",
        help="simplify the ONNX graph with onnxslim, kept only when parity holds (so only when "
        "validating). For vit_large it takes minutes and ~8 GB of memory",
    ),
) -> None:
    """Export a detector at a fixed GSD, tile and batch size, validated against PyTorch."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from scalemae_det.export.onnx_export import export_onnx
    from scalemae_det.export.prepare import check_outputs
    from scalemae_det.export.torchscript_export import export_torchscript

    console = Console(stderr=True)
    if fp16:
        if precision not in (DEFAULTS.precision, "fp16"):
            raise InputError(f"--fp16 and --precision {precision} disagree; give --precision only")
        console.print(
            "warning: --fp16 is deprecated; use --precision fp16", style="yellow", highlight=False
        )
        precision = "fp16"
    spec = ExportSpec(
        gsd=gsd,
        tile=tile,
        batch=batch,
        max_detections=max_detections,
        score_threshold=score_threshold,
        refine_boxes=refine_boxes,
        opset=opset,
        precision=precision,
        validate=validate,
        simplify=simplify,
        calibration=tuple(calibration),
        calibration_tiles=calibration_tiles,
        calibration_method=calibration_method,
        int8_min_agreement=int8_min_agreement,
        int8_labels=None if int8_labels is None else str(int8_labels),
        int8_images=None if int8_images is None else str(int8_images),
        flavour="deepness" if fmt == "deepness" else DEFAULTS.flavour,
        overlap=overlap,
    )
    checks.choice("format", fmt, FORMATS)
    if overlap is not None and fmt != "deepness":
        raise InputError(f"--overlap is only used with --format deepness (this is --format {fmt})")
    spec.check()
    outputs = _outputs(out, fmt)
    for kind, path in outputs:  # all outputs, before the first is written
        spec.check_format(kind, path)
    check_outputs([path for _, path in outputs])
    exporters = {"onnx": export_onnx, "torchscript": export_torchscript}
    for kind, path in outputs:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"{kind}: loading {checkpoint}")
            result = exporters[kind](
                checkpoint,
                path,
                spec,
                log=lambda msg, task=task, kind=kind: progress.update(
                    task, description=f"{kind}: {msg}"
                ),
            )
        meta = result.metadata
        console.print(
            f"wrote {result.path} ({result.size_bytes / 2**20:.1f} MiB, {result.seconds:.1f} s): "
            f"{meta.model_config} {meta.precision}, gsd {meta.gsd} m/px, tile {meta.tile}, batch "
            f"{meta.batch}, "
            f"max {meta.max_detections} detections, score > {meta.score_threshold}"
            + meta.box_head_passes
            + (", simplified" if result.simplified else "")
        )
        if result.deepness:
            d = result.deepness
            console.print(
                f"for QGIS Deepness and GeoDeep: {d.det_type} rows (1, {meta.max_detections}, "
                f"{5 + len(meta.class_names)}), resolution {d.resolution:g} cm/px, tiles "
                f"{d.tiles_size} px overlapping {d.tiles_overlap}%, confidence {d.det_conf:g}, "
                f"NMS IoU {d.det_iou_thresh:g}",
                highlight=False,
            )
        if meta.calibration_table:
            console.print(
                f"TensorRT calibration table: {result.path.with_name(meta.calibration_table)}",
                highlight=False,
            )
        if result.report:
            console.print(
                f"{result.report.summary()}\nreport: {result.report_path}", highlight=False
            )
        else:
            console.print("not validated (--no-validate)")
