"""Checkpoint -> TorchScript: the same fixed-scale module, traced, with the ONNX metadata as an
extra file.

TorchScript is deprecated upstream; this stays a thin second format for PyTorch-only deployments.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torchvision  # noqa: F401  registers torchvision::nms and roi_align, which the traced graph calls

from scalemae_det.base.atomic import atomic_path
from scalemae_det.base.errors import InputError
from scalemae_det.base.metadata import THRESHOLD_INITIALIZER, ModelMetadata
from scalemae_det.export.options import ExportSpec, Log, quiet
from scalemae_det.export.parity import ParityCheck, batched, record_report
from scalemae_det.export.prepare import ExportResult, prepare

METADATA_FILE = (
    "scalemae_det_metadata.json"  # holds ModelMetadata.to_props(), as in ONNX metadata_props
)
NOT_ONNX = 0  # the metadata's opset for a TorchScript file


@contextmanager
def _no_deprecation_warnings():
    """torch.jit warns on every trace/save/load that it is deprecated; that is said once, above."""
    with warnings.catch_warnings():
        for category in (torch.jit.TracerWarning, FutureWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        yield


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, ModelMetadata]:
    """(module, metadata); the module maps images (B, 3, T, T) in [0, 1] to the four padded
    outputs."""
    extra = {METADATA_FILE: ""}
    try:
        with _no_deprecation_warnings():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"{path}: not a TorchScript file ({str(exc).splitlines()[0]})") from None
    if not extra[METADATA_FILE]:
        raise InputError(f"{path}: not a scalemae-det TorchScript model (no {METADATA_FILE})")
    return module, ModelMetadata.from_props(json.loads(extra[METADATA_FILE]), source=str(path))


def torchscript_runner(
    module: torch.jit.ScriptModule, batch: int, score_threshold: float | None = None
):
    """(runner for ParityCheck, runtime name), at the module's threshold or at `score_threshold`."""
    threshold = getattr(module, THRESHOLD_INITIALIZER)
    own = float(threshold)

    def run(images):
        threshold.fill_(own if score_threshold is None else score_threshold)
        # Without the profiling executor's warm-up passes, which cost seconds per call for a few
        # calls.
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return tuple(t.numpy() for t in module(torch.from_numpy(images)))

    return batched(run, batch), "torch.jit (reloaded)"


def export_torchscript(
    checkpoint: str | Path, out: str | Path, spec: ExportSpec = ExportSpec(), log: Log = quiet
) -> ExportResult:
    """Write `out` (and, when validating, `out`.parity.json); raise UserError and write nothing on
    failure."""
    start = time.perf_counter()
    out = Path(out)
    spec.check_format("torchscript", out)
    prep = prepare(checkpoint, [out], spec, opset=NOT_ONNX)
    log(
        f"tracing the {prep.metadata.model_config} detector to TorchScript "
        f"({prep.metadata.precision})"
    )
    with torch.no_grad(), _no_deprecation_warnings():
        traced = torch.jit.trace(prep.wrapper, prep.example(), check_trace=False)
    report = None
    with atomic_path(out) as tmp:
        with _no_deprecation_warnings():
            torch.jit.save(
                traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(prep.metadata.to_props())}
            )
        if prep.spec.validate:
            log("running the PyTorch reference on the validation tiles")
            check = ParityCheck.build(prep)
            log("validating the reloaded TorchScript module")
            module, _ = load_torchscript(tmp)
            report = check.run(
                lambda threshold: torchscript_runner(module, prep.spec.batch, threshold)
            )
            if not report.passed:
                raise InputError(f"{out}: {report.summary()}; nothing written")
    report_path = record_report(out, report)
    return ExportResult(
        out,
        prep.metadata,
        report,
        report_path,
        False,
        time.perf_counter() - start,
        out.stat().st_size,
    )
