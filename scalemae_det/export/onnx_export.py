"""Checkpoint -> ONNX at a fixed scale: trace, check, simplify when it keeps parity, validate, then
write.

Exporter: the TorchScript-based `torch.onnx.export(..., dynamo=False)`. The dynamo exporter
(torch.export) stops at torchvision's `batched_nms`, which branches on the data-dependent number
of boxes left after the score threshold (GuardOnDataDependentSymNode on torch 2.14); the tracer
takes torchvision's tracing path there (coordinate-offset NMS, scripted), which ONNX Runtime runs.

Half precision: the backbone is exported in half precision from PyTorch (see fixed_scale). The
onnxruntime.transformers.float16 converter was tried on the float32 graph and produces invalid
models here: it duplicates Cast nodes under one name and mistypes the NMS `If` subgraphs
(float vs float16 ReduceMax outputs); onnxconverter-common is not a dependency.

int8: the float32 graph is traced and validated as usual, then quantized (export/quantize.py) on
tiles of the user's scenes (export/calibration.py) and kept only when it finds what the float32
graph finds on held-out tiles (export/agreement.py); the gate's figures replace the parity report.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import onnx
import torch

from scalemae_det.base.atomic import atomic_path, work_dir
from scalemae_det.base.errors import InputError
from scalemae_det.base.metadata import INPUT_NAME, OUTPUT_NAMES, ModelMetadata
from scalemae_det.export.options import PRECISIONS, ExportSpec, Log, quiet
from scalemae_det.export.parity import ParityCheck, ParityReport, record_report
from scalemae_det.export.prepare import ExportResult, Prepared, prepare
from scalemae_det.runtime.session import Session


def trace_to_onnx(wrapper: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings flag Python values frozen at trace time; with a fixed batch, tile and
        # embedding that is intended, and validation checks the graph on unseen tiles.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            do_constant_folding=True,
        )


def finish_graph(model: onnx.ModelProto, metadata: ModelMetadata) -> onnx.ModelProto:
    """Static output shapes (the tracer leaves K symbolic) and the metadata the runtime reads."""
    b, k = metadata.batch, metadata.max_detections
    shapes = {"boxes": (b, k, 4), "scores": (b, k), "labels": (b, k), "num_detections": (b,)}
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(dims, shapes[output.name], strict=True):
            dim.Clear()
            dim.dim_value = size
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata.to_props())
    model.doc_string = (
        f"scalemae-det {metadata.model_config} detector at {metadata.gsd} m/px, "
        f"tile {metadata.tile}, batch {metadata.batch}"
    )
    return model


def simplify(src: Path, dst: Path, metadata: ModelMetadata) -> bool:
    """onnxslim; False when it fails (the caller then keeps the unsimplified graph)."""
    import onnxslim

    try:
        slim = onnxslim.slim(str(src))
    except (
        Exception
    ):  # any failure of the optional simplifier just means keeping the original graph
        return False
    onnx.save(finish_graph(slim, metadata), str(dst))
    try:
        onnx.checker.check_model(str(dst))
    except onnx.checker.ValidationError:
        return False
    return True


def onnx_runner(path: Path, score_threshold: float | None = None):
    """(runner for ParityCheck, provider name), at the graph's threshold or at `score_threshold`:
    the
    runtime's own Session, so the model is checked against the contract and run with the provider
    policy users get (CUDA when usable, without TF32)."""
    session = Session(path, "auto", exact=True, score_threshold=score_threshold)
    return session.run_checked, f"onnxruntime {session.provider}"


def _validated(prep: Prepared, raw: Path, slim: Path, log: Log) -> tuple[Path, ParityReport, bool]:
    """(graph to keep, its parity report, whether it is onnxslim's): the simplified graph when it
    keeps parity."""
    log("running the PyTorch reference on the validation tiles")
    check = ParityCheck.build(prep)
    if prep.spec.simplify:
        log("simplifying with onnxslim")
        if simplify(raw, slim, prep.metadata):
            log("validating the simplified graph in ONNX Runtime")
            report = check.run(lambda threshold: onnx_runner(slim, threshold))
            if report.passed:
                return slim, report, True
            log(f"the simplified graph lost parity ({report.summary()}); keeping the traced one")
    log("validating the graph in ONNX Runtime")
    return raw, check.run(lambda threshold: onnx_runner(raw, threshold)), False


def export_onnx(
    checkpoint: str | Path, out: str | Path, spec: ExportSpec = ExportSpec(), log: Log = quiet
) -> ExportResult:
    """Write `out` (and, when validating, `out`.parity.json); raise UserError and write nothing on
    failure."""
    start = time.perf_counter()
    out = Path(out)
    spec.check_format("onnx", out)
    prep = prepare(checkpoint, [out], spec, opset=spec.opset)
    spec, metadata = prep.spec, prep.metadata
    with work_dir(
        out
    ) as work:  # beside the output; what an export killed earlier left there goes first
        raw, slim = work / "raw.onnx", work / "slim.onnx"
        log(
            f"tracing the {metadata.model_config} detector to ONNX (opset {spec.opset}, "
            f"{metadata.precision})"
        )
        trace_to_onnx(prep.wrapper, prep.example(), raw, spec.opset)
        onnx.save(finish_graph(onnx.load(str(raw)), metadata), str(raw))
        try:
            onnx.checker.check_model(str(raw))
        except onnx.checker.ValidationError as exc:
            raise InputError(
                f"{out}: the exported graph fails onnx.checker ({str(exc).splitlines()[0]}); "
                "nothing written"
            ) from None
        chosen, report, simplified = raw, None, False
        if spec.validate:
            chosen, report, simplified = _validated(prep, raw, slim, log)
            if not report.passed:
                raise InputError(f"{out}: {report.summary()}; nothing written")
        if spec.int8:
            int8_graph, table, metadata, report = _int8(prep, chosen, report, out, work, log)
            with atomic_path(table_path(out)) as tmp:
                os.replace(table, tmp)
            chosen = int8_graph
        else:
            table_path(out).unlink(
                missing_ok=True
            )  # an earlier int8 export's table would describe another model
        deepness = None
        if spec.deepness:
            chosen, deepness = _deepness(prep, metadata, chosen, work, log)
        with atomic_path(out) as tmp:
            os.replace(chosen, tmp)
    report_path = record_report(out, report)
    return ExportResult(
        out,
        metadata,
        report,
        report_path,
        simplified,
        time.perf_counter() - start,
        out.stat().st_size,
        deepness,
    )


def _deepness(prep: Prepared, metadata, graph: Path, work: Path, log: Log):
    """(the deepness flavour of `graph` in `work`, its Deepness metadata); its rows are checked
    against `graph`'s detections on the validation tiles when validating."""
    from scalemae_det.export.deepness import DeepnessMetadata, write_deepness
    from scalemae_det.export.parity import validation_tiles

    spec = prep.spec
    deepness = DeepnessMetadata.of(metadata, spec.resolved_overlap, prep.model.config.nms_thresh)
    log("writing the (1, N, 5 + classes) output and metadata for QGIS Deepness and GeoDeep")
    tiles = validation_tiles(spec.tile, 1) if spec.validate else None
    return write_deepness(graph, work / "deepness.onnx", metadata, deepness, tiles), deepness


def table_path(model_path: Path) -> Path:
    """Where an int8 export's TensorRT calibration table goes: beside the model, named after it."""
    return model_path.with_name(model_path.name + ".trt-calibration.flatbuffers")


def int8_model(
    float_graph: Path,
    float_meta: ModelMetadata,
    tiles: np.ndarray,
    work: Path,
    method: str = "minmax",
    table: Path | None = None,
    table_name: str | None = None,
    providers: list[str] | None = None,
):
    """The int8 model of a float32 export in `work` (graph with the contract's metadata), calibrated
    on
    `tiles`: (path, export.quantize.Quantized, its metadata). No gate: see `_int8`."""
    from scalemae_det.export.calibration import in_batches
    from scalemae_det.export.quantize import quantize_int8

    metadata = replace(float_meta, precision=PRECISIONS["int8"], calibration_table=table_name)
    quantized = quantize_int8(
        float_graph,
        work / "int8_final.onnx",
        in_batches(tiles, float_meta.batch),
        work,
        method,
        table,
        providers,
        finish=lambda model: finish_graph(model, metadata),
    )
    return quantized.path, quantized, metadata


def _int8(
    prep: Prepared, float_graph: Path, parity: ParityReport | None, out: Path, work: Path, log: Log
):
    """Calibrate, quantize and gate; (int8 graph, TensorRT table, int8 metadata, gate report) in
    `work`, or UserError when the gate refuses it."""
    from scalemae_det.export.agreement import (
        IOU_THRESHOLD,
        SCORE_MARGIN,
        AgreementReport,
        agreement,
        runtime_ap50,
    )
    from scalemae_det.export.calibration import held_out_count, read_tiles

    spec, float_meta = prep.spec, prep.metadata
    log(f"reading calibration tiles from {', '.join(spec.calibration)}")
    tiles = read_tiles(
        spec.calibration,
        float_meta,
        spec.calibration_tiles,
        held_out_count(spec.calibration_tiles, spec.batch),
    )
    log(
        f"calibrating ({spec.calibration_method}, {len(tiles.calibration)} tiles) and quantizing "
        "to int8"
    )
    table = work / "table.flatbuffers"
    int8_graph, quantized, metadata = int8_model(
        float_graph,
        float_meta,
        tiles.calibration,
        work,
        spec.calibration_method,
        table,
        table_path(out).name,
    )
    log(f"checking the int8 graph against float32 on {len(tiles.held_out)} held-out tiles")
    run32, runtime = onnx_runner(float_graph)
    reference, _ = run32(tiles.held_out)
    del run32
    exported, _ = onnx_runner(int8_graph)[0](tiles.held_out)
    precision, recall, ref_n, got_n = agreement(reference, exported, float_meta.score_threshold)
    ap50 = None
    if spec.int8_labels is not None:
        log(f"AP50 of both graphs on {spec.int8_labels}")
        ap50 = {
            "labels": spec.int8_labels,
            "float32": runtime_ap50(float_graph, spec.int8_labels, spec.int8_images),
            "int8": runtime_ap50(int8_graph, spec.int8_labels, spec.int8_images),
        }
    report = AgreementReport(
        precision="int8",
        runtime=runtime,
        tiles=len(tiles.held_out),
        reference_detections=ref_n,
        detections=got_n,
        agreement_precision=precision,
        agreement_recall=recall,
        min_agreement=spec.int8_min_agreement,
        score_floor=float_meta.score_threshold + SCORE_MARGIN,
        iou_threshold=IOU_THRESHOLD,
        calibration={
            **quantized.describe(),
            "scenes": tiles.scenes,
            "held_out_tiles": len(tiles.held_out),
            "tiles_left_out_nodata": tiles.skipped_nodata,
        },
        ap50=ap50,
        float32_parity=None if parity is None else asdict(parity),
        passed=False,
    )
    report.passed = bool(
        ref_n > 0 and precision >= spec.int8_min_agreement and recall >= spec.int8_min_agreement
    )
    if not report.passed:
        why = (
            "; the float32 graph finds nothing on the held-out tiles, so there is nothing to "
            "check: "
            "calibrate on scenes with objects"
            if ref_n == 0
            else ""
        )
        raise InputError(f"{out}: {report.summary()}{why}; nothing written")
    return int8_graph, table, metadata, report
