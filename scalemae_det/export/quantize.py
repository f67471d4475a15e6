"""Static int8 quantization (QDQ) of an exported float32 detector graph, calibrated on given tiles.

This module knows no flags: `quantize_int8(float_graph, out, tiles, work_dir)` writes the int8 graph
and returns what it did; export/onnx_export.py decides when, and the gate (export/agreement.py)
whether the result is kept.

What is quantized, and why (measured on this project's shared 2-core AVX-512 VNNI CPU with
onnxruntime 1.31; bench/bench_precision.py gives the end-to-end figures in the README):
- Where the time goes differs less than expected between models. In the bundled tiny model at tile
  256 (onnxruntime's profiler) the box head's convolutions over 1000 RoIs take 30%, the ViT blocks
  19%, the RPN head 14%, RoIAlign 11%, the pyramid 8%. Quantizing step by step (tiny, MinMax,
  16 calibration and 16 held-out tiles): trunk alone 0.97x float32, + pyramid 0.97x, + RPN
  convolutions 1.21x, + box head 2.08x. vit_base_patch16 at tile 512 (process CPU time per tile,
  which the neighbours' load does not inflate): the trunk's Gemms alone 1.27x, the trunk with its
  attention MatMuls 1.24x, everything below 2.14x. So the MatMul/Gemm/Conv/ConvTranspose nodes of
  the backbone (`/features/`: patch embedding, ViT blocks, pyramid), of the RPN's shared
  convolutions (`/rpn/head/conv/`) and of the box head (`/roi_heads/box_head/`) are quantized.
- Kept float32: the layers that emit scores and box deltas directly (RPN objectness and deltas,
  the box predictor: a few hundred MACs per RoI; quantizing them too gained nothing, 2.03x vs 2.08x
  on tiny) and everything after them: anchor decoding, RoIAlign, NMS, the padding of the outputs,
  which work on pixel coordinates of hundreds (the same split as the fp16 export in fixed_scale).
  The scopes are the attribute names of FixedScaleDetector (`features`, `rpn`, `roi_heads`), which
  the tracer writes into node names.
- Symmetric int8 for activations and weights (S8S8), weights per output channel: TensorRT's
  explicit quantization takes only symmetric (zero-point 0) int8, and on this CPU S8S8 ran within
  5% of U8S8 (vit_base 2.14x vs 2.25x, tiny 1.43x vs 1.45x in another run), so one file serves CPU,
  CUDA and TensorRT.
- Calibration method: MinMax is the default. On the tiny model MinMax, Entropy and Percentile gave
  the same agreement with float32 (precision/recall 0.97-0.99 over all detections above the
  threshold, 1.000 over those scoring >= 0.5), and MinMax calibrates fastest (1.6 s against 3.6 s
  and 8.3 s for 16 tiles: one ReduceMin/ReduceMax per tensor instead of a histogram of every
  tensor); the others stay selectable.

onnxruntime mechanics:
- `quant_pre_process` must run with `skip_symbolic_shape=True`: symbolic shape inference stops on
  the traced graph ("Incomplete symbolic shape inference", the data-dependent NMS shapes); ONNX's
  own
  shape inference plus onnxruntime's basic optimisations (which fuse MatMul+Add into Gemm) work.
- Calibration data go in one batch per `collect_data` call: the histogram calibrators keep every
  output of a call in memory (calibrate.py HistogramCalibrater.collect_data), while per-call
  collection merges as it goes; `CalibMaxIntermediateOutputs` is avoided because
  MinMaxCalibrater.collect_data clears the collected outputs at that count without merging them.
- The ranges are measured once and serve twice: quantize_static reads them from a calibration cache
  file, and `write_calibration_table` turns them into the flatbuffers table onnxruntime's TensorRT
  execution provider reads (`trt_int8_calibration_table_name`). That table is for non-QDQ graphs:
  onnxruntime's TensorRT EP documentation says a table must not be given with a Q/DQ graph,
  because TensorRT refuses one when Q/DQ nodes are present; the runtime therefore runs this graph
  on TensorRT with `trt_int8_enable` and TensorRT's explicit quantization (its Q/DQ nodes), and the
  table is kept beside the model for TensorRT builds of the float32 graph (implicit quantization).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from scalemae_det.base.atomic import work_dir
from scalemae_det.base.metadata import INPUT_NAME
from scalemae_det.export.options import CALIBRATION_METHODS, ExportSpec

DEFAULT_METHOD = ExportSpec().calibration_method
QUANTIZED_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
QUANTIZED_SCOPES = ("/features/", "/rpn/head/conv/", "/roi_heads/box_head/")


@dataclass
class Quantized:
    path: Path
    method: str
    nodes: list[str]  # names of the quantized nodes
    tiles: int  # calibration tiles seen
    table: Path | None = None  # TensorRT calibration table, when asked for
    float_nodes: list[str] = field(default_factory=list)  # candidate ops left in float32

    def describe(self) -> dict:
        """What the parity report records about the quantization."""
        scopes = {s: sum(n.startswith(s) for n in self.nodes) for s in QUANTIZED_SCOPES}
        left = Counter(re.sub(r"_\d+$", "", "/".join(n.split("/")[:4])) for n in self.float_nodes)
        return {
            "method": self.method,
            "tiles": self.tiles,
            "quantized_nodes": len(self.nodes),
            "quantized_by_scope": scopes,
            "float32_compute_nodes_by_scope": dict(sorted(left.items())),
        }


def quantized_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(nodes to quantize, compute nodes left float32), by op type and name scope (see the module
    doc)."""
    chosen, left = [], []
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS:
            (chosen if node.name.startswith(QUANTIZED_SCOPES) else left).append(node.name)
    return chosen, left


class _OneBatch:
    """A CalibrationDataReader over one batch (duck-typed: onnxruntime only calls get_next)."""

    def __init__(self, images: np.ndarray):
        self.images: np.ndarray | None = images

    def get_next(self) -> dict | None:
        images, self.images = self.images, None
        return None if images is None else {INPUT_NAME: images}


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]


def calibrate(
    graph: Path,
    batches: Iterable[np.ndarray],
    method: str,
    work: Path,
    providers: list[str] | None = None,
):
    """Ranges (onnxruntime TensorsData) of the inputs and outputs of QUANTIZED_OPS nodes over
    `batches`."""
    from onnxruntime.quantization import create_calibrator

    calibrator = create_calibrator(
        graph,
        list(QUANTIZED_OPS),
        augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=_method(method),
        use_external_data_format=True,
        providers=providers,
        extra_options={"symmetric": True},
    )
    seen = 0
    for images in batches:
        calibrator.collect_data(_OneBatch(images))
        seen += 1
    if not seen:
        raise ValueError("no calibration batches")
    ranges = calibrator.compute_data()
    del calibrator  # its session holds the augmented graph (the size of the model) in memory
    return ranges


def write_trt_table(ranges, path: Path) -> None:
    """onnxruntime's TensorRT calibration table (flatbuffers) of `ranges` at `path`."""
    from onnxruntime.quantization import write_calibration_table

    with work_dir(path) as folder:
        write_calibration_table(dict(ranges.items()), dir=str(folder))
        os.replace(folder / "calibration.flatbuffers", path)


def quantize_int8(
    float_graph: Path,
    out: Path,
    batches: Iterable[np.ndarray],
    work: Path,
    method: str = DEFAULT_METHOD,
    table: Path | None = None,
    providers: list[str] | None = None,
    finish: Callable[[onnx.ModelProto], onnx.ModelProto] = lambda model: model,
) -> Quantized:
    """Write the QDQ int8 graph of `float_graph` to `out` (and the TensorRT table to `table`),
    calibrated on `batches` (each a full (B, 3, T, T) float32 input). `work` is a scratch directory.
    """
    import logging

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    pre, cache = work / "pre.onnx", work / "ranges.json"
    quant_pre_process(
        str(float_graph),
        str(pre),
        skip_symbolic_shape=True,
        save_as_external_data=True,
        external_data_location="pre.onnx.data",
    )
    nodes, left = quantized_nodes(onnx.load(str(pre), load_external_data=False))
    if not nodes:
        raise ValueError(
            f"{float_graph}: no {'/'.join(QUANTIZED_OPS)} node under {', '.join(QUANTIZED_SCOPES)}"
        )
    counted = []
    ranges = calibrate(pre, (counted.append(len(b)) or b for b in batches), method, work, providers)
    save_tensors_data(ranges, cache)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(
        logging.ERROR
    )  # quantize_static warns about pre-processing it cannot detect
    try:
        quantize_static(
            str(pre),
            str(work / "int8.onnx"),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=nodes,
            calibrate_method=_method(method),
            use_external_data_format=True,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            calibration_cache_path=str(cache),
        )
    finally:
        logging.getLogger().setLevel(quiet)
    # one file (int8 weights fit well under 2 GB), `finish` applied on the way (e.g. the contract's
    # metadata)
    onnx.save(finish(onnx.load(str(work / "int8.onnx"))), str(out))
    if table is not None:
        write_trt_table(ranges, table)
    return Quantized(out, method, nodes, sum(counted), table, left)
