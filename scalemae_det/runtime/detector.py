"""The library entry point: `Detector(model).detect_scene(path)` or `.detect_tiles(array)`.

A scene is streamed tile batch by tile batch (a reader thread preparing the next batch while the
session runs the current one), tile detections are mapped to scene pixels and merged across seams.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scalemae_det.base import checks
from scalemae_det.base.errors import ParameterError
from scalemae_det.base.metadata import DEFAULT_OVERLAP, DEFAULT_TTA_IOU, ModelMetadata
from scalemae_det.runtime.detections import Detections
from scalemae_det.runtime.inputs import Source
from scalemae_det.runtime.prefetch import prefetch as prefetched
from scalemae_det.runtime.scene import Batch, Scene, batches, open_scene
from scalemae_det.runtime.seams import join_seams
from scalemae_det.runtime.session import Session
from scalemae_det.runtime.tiling import TRUNCATION_MARGIN, Tile
from scalemae_det.runtime.tta import check as check_tta
from scalemae_det.runtime.tta import run_views


@dataclass
class SceneResult:
    scene: Scene
    detections: Detections  # scene pixels, merged
    class_names: list[str]
    provider: str
    tiles_run: int = 0
    tiles_skipped: int = 0
    seconds: float = 0.0
    run_seconds: float = 0.0  # of which inside session.run
    notes: list[str] = field(default_factory=list)
    outside_area: int = 0  # detections dropped: centred outside the area of interest

    @property
    def path(self) -> str:
        return self.scene.path

    @property
    def name(self) -> str:
        """The scene's name, as outputs give it."""
        return self.scene.name

    @property
    def tiles_outside(self) -> int:
        """Tiles not read: outside the area of interest."""
        return self.scene.tiles_outside


class Detector:
    """A scalemae-det model ready to run over scenes.

    `model` is an exported model's path, opened as a `Session` with `provider` (auto, tensorrt, cuda
    or cpu), `batch` and `threads`; or a ready session, passed in the way torchvision's `FasterRCNN`
    takes its heads: anything with Session's `run`, `metadata`, `batch`, `provider` and
    `run_seconds` (the benchmarks pass the PyTorch model in its place to compare engines on the same
    tiles, reads and merge).
    """

    def __init__(
        self,
        model: str | os.PathLike | Session,
        provider: str = "auto",
        batch: int | None = None,
        threads: int | None = None,
    ):
        self.session = (
            Session(model, provider, batch, threads)
            if isinstance(model, (str, os.PathLike))
            else model
        )
        self.metadata: ModelMetadata = self.session.metadata

    @property
    def provider(self) -> str:
        return self.session.provider

    def threshold(self, score_threshold: float | None) -> float:
        """The score cut-off to apply: the model's own when None. One below the model's is refused,
        not
        ignored: the graph drops detections under its own threshold before they reach us, so a lower
        cut-off
        would silently give the same detections as the model's."""
        own = self.metadata.score_threshold
        if score_threshold is None:
            return own
        checks.number("score_threshold", score_threshold, lo=0, hi=1)
        if score_threshold < own:
            raise ParameterError(
                "score_threshold",
                "below the threshold exported into "
                f"{Path(getattr(self.session, 'path', 'the model')).name} ({own:g}), "
                f"under which the graph keeps no detection; use {own:g} or more, or re-export the "
                "model with "
                f"a lower export `score_threshold` ({score_threshold:g})",
                value=score_threshold,
            )
        return score_threshold

    def detect_tiles(
        self,
        images: np.ndarray,
        score_threshold: float | None = None,
        tta: str = "none",
        tta_iou: float = DEFAULT_TTA_IOU,
    ) -> list[Detections]:
        """(N, 3, T, T) float32 in [0, 1] (see scalemae_det.base.pixels) -> detections per tile,
        tile pixels; `tta` names the test-time views fused per tile (runtime.tta.VIEWS)."""
        t = self.metadata.tile
        if images.ndim != 4 or images.shape[1:] != (3, t, t):
            raise ValueError(f"expected tiles of shape (N, 3, {t}, {t}), got {images.shape}")
        thr = self.threshold(score_threshold)
        check_tta(tta, tta_iou)
        found = run_views(self.session.run, images, tta, tta_iou)
        return [det.take(det.scores >= thr) for det in found]

    def _scene_detections(
        self, batch: Batch, thr: float, tta: str = "none", tta_iou: float = DEFAULT_TTA_IOU
    ) -> list[tuple[Tile, Detections, np.ndarray]]:
        t = self.metadata.tile
        found = []
        runs = run_views(self.session.run, batch.images, tta, tta_iou)
        for tile, nodata, det in zip(batch.tiles, batch.nodata, runs):
            det = det.take(det.scores >= thr)  # thr checked once per scene by detect_scene
            cx = np.clip(((det.boxes[:, 0] + det.boxes[:, 2]) / 2).astype(int), 0, t - 1)
            cy = np.clip(((det.boxes[:, 1] + det.boxes[:, 3]) / 2).astype(int), 0, t - 1)
            det = det.take(~nodata[cy, cx])  # centred on nodata (or padding): not a real object
            truncated = tile.truncated(det.boxes, TRUNCATION_MARGIN)
            found.append(
                (tile, Detections(tile.to_scene(det.boxes), det.scores, det.labels), truncated)
            )
        return found

    def detect_scene(
        self,
        path: str | os.PathLike | Source,
        *,
        overlap: float = DEFAULT_OVERLAP,
        score_threshold: float | None = None,
        bands: Sequence[int] | None = None,
        scale: str | tuple[float, float] = "auto",
        gsd_mode: str = "resample",
        match: str = "ios",
        match_threshold: float = 0.5,
        tta: str = "none",
        tta_iou: float = DEFAULT_TTA_IOU,
        prefetch: bool = True,
        progress: Callable[[int, int], None] | None = None,
        area=None,
    ) -> SceneResult:
        """Detect over a whole raster (a file, a URL or a runtime.inputs.Source), or over the tiles
        meeting `area` (a runtime.aoi.Area), keeping the detections centred inside it. `tta`
        names the test-time views, fused per tile before the seams are joined (runtime.tta).
        `progress(done, total)` is called as tiles are done."""
        start = time.perf_counter()
        run_before = self.session.run_seconds
        thr = self.threshold(score_threshold)
        check_tta(tta, tta_iou)
        scene = open_scene(
            path,
            self.metadata,
            bands=bands,
            scale=scale,
            gsd_mode=gsd_mode,
            overlap=overlap,
            area=area,
        )
        result = SceneResult(
            scene,
            Detections.concat([]),
            self.metadata.class_names,
            self.provider,
            notes=list(scene.notes),
        )
        reader = batches(scene, self.session.batch, self.metadata.tile)
        parts, tile_ids, truncated = [], [], []
        done = 0
        for batch in prefetched(reader) if prefetch else reader:
            result.tiles_skipped += batch.skipped
            result.tiles_run += len(batch.tiles)
            here = self._scene_detections(batch, thr, tta, tta_iou) if batch.tiles else []
            for tile, det, trunc in here:
                parts.append(det)
                tile_ids.append(np.full(len(det), tile.index))
                truncated.append(trunc)
            done += batch.skipped + len(batch.tiles)
            if progress:
                progress(done, len(scene.tiles))
        found = Detections.concat(parts)
        tile_ids, truncated = np.concatenate(tile_ids or [[]]), np.concatenate(truncated or [[]])
        # the per-tile copies go before the merge: peak memory is one copy plus the merge's
        parts.clear()
        if len(found):
            keep = join_seams(
                found.boxes, found.scores, found.labels, tile_ids, truncated, match, match_threshold
            )
            found = found.take(keep)
        if scene.area_rings is not None and len(found):
            from scalemae_det.runtime.aoi import points_inside

            b = found.boxes
            inside = points_inside(
                scene.area_rings, (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            )
            result.outside_area = int((~inside).sum())
            found = found.take(inside)
        result.detections = found
        result.seconds = time.perf_counter() - start
        result.run_seconds = self.session.run_seconds - run_before
        return result
