"""The checks made before anything is written, then the loaded model, the module to trace and its
metadata."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import scalemae_det
from scalemae_det.base import checks
from scalemae_det.base.digest import sha256_file
from scalemae_det.base.errors import InputWarning, ParameterError
from scalemae_det.base.metadata import ModelMetadata
from scalemae_det.export.calibration import calibration_scenes
from scalemae_det.export.deepness import DeepnessMetadata
from scalemae_det.export.fixed_scale import FixedScaleDetector
from scalemae_det.export.options import (
    DEFAULT_TILE,
    TILE_RATIO_WARNED,
    ExportSpec,
    trained_gsds,
    trained_tile,
)
from scalemae_det.export.parity import ParityReport, report_path
from scalemae_det.models.detector import IMAGENET_MEAN, IMAGENET_STD, ScaleMAEDetector
from scalemae_det.models.weights import load_detector


@dataclass
class Prepared:
    """A checkpoint made ready for one export: the float32 model (the reference) and the module to
    trace."""

    model: ScaleMAEDetector
    wrapper: FixedScaleDetector
    metadata: ModelMetadata
    spec: ExportSpec

    def example(self) -> torch.Tensor:
        """Tracing input; deliberately not the validation tiles, so validation sees unseen data."""
        g = torch.Generator().manual_seed(12345)
        return torch.rand(self.spec.batch, 3, self.spec.tile, self.spec.tile, generator=g)


@dataclass
class ExportResult:
    path: Path
    metadata: ModelMetadata
    report: ParityReport | None  # None when validation was skipped
    report_path: Path | None
    simplified: bool  # onnxslim's graph was kept (ONNX only)
    seconds: float
    size_bytes: int
    deepness: DeepnessMetadata | None = None  # what a deepness-flavour file tells Deepness/GeoDeep


def check_outputs(outs: list[Path]) -> None:
    """Each output and the parity report beside it can be written."""
    for out in outs:
        checks.output_file(out, "out")
        checks.output_file(report_path(out))


def check_int8_inputs(spec: ExportSpec) -> None:
    """The calibration sources and the labelled set exist (their tiles are read after tracing)."""
    calibration_scenes(spec.calibration)
    if spec.int8_labels is not None:
        if not Path(spec.int8_labels).is_file():
            raise ParameterError("int8_labels", "no such file", value=spec.int8_labels)
        if not Path(spec.int8_images).is_dir():
            raise ParameterError("int8_images", "no such directory", value=spec.int8_images)


def resolve_tile(tile: int | None, trained: int | None, checkpoint: str | Path) -> int:
    """The export's tile: `tile` when given, else the training input size, else DEFAULT_TILE; an
    InputWarning when the tile is more than TILE_RATIO_WARNED times the training size either way,
    or when neither is known."""
    if tile is None:
        if trained is not None:
            return trained
        warnings.warn(
            InputWarning(
                f"{checkpoint}: records no training input size; exporting at `tile` "
                f"{DEFAULT_TILE} (give `tile` the size the model was trained at)"
            ),
            stacklevel=2,
        )
        return DEFAULT_TILE
    if trained is not None and max(tile / trained, trained / tile) > TILE_RATIO_WARNED:
        warnings.warn(
            InputWarning(
                f"{checkpoint}: `tile` {tile} is {max(tile / trained, trained / tile):.3g}x the "
                f"{trained} px the model was trained on; a detector run on tiles far from its "
                "training size finds far fewer objects"
            ),
            stacklevel=2,
        )
    return tile


def check_gsd(gsd: float, trained: tuple[float, float] | None, checkpoint: str | Path) -> None:
    """An InputWarning when the export's GSD lies outside the GSDs the model was trained at: a
    recipe that enlarged its crops 1.6-2.5x (small objects) saw 0.04-0.06 m of 0.1 m images and
    should run at 0.05 m, not at the images' 0.1 m that the checkpoint records."""
    if trained is None:
        return
    finest, coarsest = trained
    if finest * (1 - 1e-6) <= gsd <= coarsest * (1 + 1e-6):
        return
    centre = (finest * coarsest) ** 0.5
    warnings.warn(
        InputWarning(
            f"{checkpoint}: `gsd` {gsd:g} m is outside the {finest:.3g}-{coarsest:.3g} m the "
            f"model was trained at (its images' GSD over its scale range); give `gsd` about "
            f"{centre:.3g} m, the middle of that range"
        ),
        stacklevel=2,
    )


def prepare(checkpoint: str | Path, outs: list[Path], spec: ExportSpec, opset: int) -> Prepared:
    """Check everything the user can get wrong, then load the checkpoint; raises UserError, writes
    nothing."""
    spec.check()
    check_outputs(outs)
    if spec.int8:
        check_int8_inputs(spec)
    model, ckpt = load_detector(checkpoint)
    cfg = model.config
    spec = replace(spec, tile=resolve_tile(spec.tile, trained_tile(ckpt), checkpoint))
    if spec.tile % cfg.patch_size:
        raise ParameterError(
            "tile", f"not a multiple of the model's patch size {cfg.patch_size}", value=spec.tile
        )
    gsd = float(ckpt["gsd"]) if spec.gsd is None else spec.gsd
    check_gsd(gsd, trained_gsds(ckpt), checkpoint)
    max_det = cfg.detections_per_image if spec.max_detections is None else spec.max_detections
    threshold = cfg.score_thresh if spec.score_threshold is None else spec.score_threshold
    spec = replace(
        spec,
        gsd=gsd,
        max_detections=max_det,
        score_threshold=threshold,
        batch=spec.resolved_batch,
    )
    wrapper = FixedScaleDetector(
        model,
        gsd,
        spec.tile,
        spec.batch,
        max_det,
        threshold,
        half=spec.fp16,
        refine_boxes=spec.refine_boxes,
    ).eval()
    # an int8 export is traced and validated in float32, then quantized (export.quantize): the
    # metadata says float32 until the int8 graph is written
    metadata = ModelMetadata(
        class_names=list(ckpt["class_names"]),
        gsd=gsd,
        res_per_metre=cfg.res_per_metre,
        tile=spec.tile,
        batch=spec.batch,
        max_detections=max_det,
        score_threshold=threshold,
        model_config=cfg.name,
        source_sha256=sha256_file(checkpoint),
        scalemae_det_version=scalemae_det.__version__,
        opset=opset,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        precision="float16" if spec.fp16 else "float32",
        refine_boxes=spec.refine_boxes,
    )
    return Prepared(model, wrapper, metadata, spec)
