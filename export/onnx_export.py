"""Checkpoint -> ONNX at a fixed scale: trace, check, simplify when it keeps parity, validate, then write.

Exporter: the TorchScript-based `torch.onnx.export(..., dynamo=False)`. The dynamo exporter
(torch.export) stops at torchvision's `batched_nms`, which branches on the data-dependent number
of boxes left after the score threshold (GuardOnDataDependentSymNode on torch 2.14); the tracer
takes torchvision's tracing path there (coordinate-offset NMS, scripted), which ONNX Runtime runs.

Half precision: the backbone is exported in half precision from PyTorch (see fixed_scale). The
onnxruntime.transformers.float16 converter was tried on the float32 graph and produces invalid
models here: it duplicates Cast nodes under one name and mistypes the NMS `If` subgraphs
(float vs float16 ReduceMax outputs); onnxconverter-common is not a dependency.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import onnx
import torch

from scalemae_det.base.metadata import INPUT_NAME, OUTPUT_NAMES, ModelMetadata
from scalemae_det.base.atomic import atomic_path, work_dir
from scalemae_det.base.errors import UserError

from scalemae_det.export.options import ExportSpec, Log, quiet
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
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), do_constant_folding=True)


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
    model.doc_string = f"scalemae-det {metadata.model_config} detector at {metadata.gsd} m/px, tile {metadata.tile}, batch {metadata.batch}"
    return model


def simplify(src: Path, dst: Path, metadata: ModelMetadata) -> bool:
    """onnxslim; False when it fails (the caller then keeps the unsimplified graph)."""
    import onnxslim

    try:
        slim = onnxslim.slim(str(src))
    except Exception:  # any failure of the optional simplifier just means keeping the original graph
        return False
    onnx.save(finish_graph(slim, metadata), str(dst))
    try:
        onnx.checker.check_model(str(dst))
    except onnx.checker.ValidationError:
        return False
    return True


def onnx_runner(path: Path, score_threshold: float | None = None):
    """(runner for ParityCheck, provider name), at the graph's threshold or at `score_threshold`: the
    runtime's own Session, so the model is checked against the contract and run with the provider
    policy users get (CUDA when usable, without TF32)."""
    session = Session(path, "auto", exact=True, score_threshold=score_threshold)
    return session.run_checked, f"onnxruntime {session.provider}"


def _validated(prep: Prepared, raw: Path, slim: Path, log: Log) -> tuple[Path, ParityReport, bool]:
    """(graph to keep, its parity report, whether it is onnxslim's): the simplified graph when it keeps parity."""
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


def export_onnx(checkpoint: str | Path, out: str | Path, spec: ExportSpec = ExportSpec(), log: Log = quiet) -> ExportResult:
    """Write `out` (and, when validating, `out`.parity.json); raise UserError and write nothing on failure."""
    start = time.perf_counter()
    out = Path(out)
    prep = prepare(checkpoint, [out], spec, opset=spec.opset)
    spec, metadata = prep.spec, prep.metadata
    with work_dir(out) as work:  # beside the output; what an export killed earlier left there goes first
        raw, slim = work / "raw.onnx", work / "slim.onnx"
        log(f"tracing the {metadata.model_config} detector to ONNX (opset {spec.opset}, {metadata.precision})")
        trace_to_onnx(prep.wrapper, prep.example(), raw, spec.opset)
        onnx.save(finish_graph(onnx.load(str(raw)), metadata), str(raw))
        try:
            onnx.checker.check_model(str(raw))
        except onnx.checker.ValidationError as exc:
            raise UserError(f"{out}: the exported graph fails onnx.checker ({str(exc).splitlines()[0]}); nothing written") from None
        chosen, report, simplified = raw, None, False
        if spec.validate:
            chosen, report, simplified = _validated(prep, raw, slim, log)
            if not report.passed:
                raise UserError(f"{out}: {report.summary()}; nothing written")
        with atomic_path(out) as tmp:
            os.replace(chosen, tmp)
    report_path = record_report(out, report)
    return ExportResult(out, metadata, report, report_path, simplified, time.perf_counter() - start, out.stat().st_size)
