"""Several exported models over one scene, their detections fused into one set.

Two uses: an ensemble of models, and multi-scale testing, the same checkpoint exported at several
GSDs (each export bakes its GSD in, and predict resamples the scene to each model's GSD, so each
member sees the objects at another size). `Ensemble([Detector, ...], iou_threshold)` runs like a
`Detector` over scenes (`detect_scene` takes the same arguments), by five rules:

1. the members must name the same classes in the same order, and no model file may be given
   twice (it would count its own detections twice); both are checked when the ensemble is built;
2. each member detects over the whole scene as it would alone: at its own GSD and tile, with the
   test-time views asked for and its own seam joining, keeping what its graph keeps;
3. the members' detections, all in the scene's own pixels, are fused per class by weighted box
   fusion (`runtime.tta.fuse`, its rules 1-4 with a member in place of a view): a box only one
   member of four found keeps a quarter of its score;
4. the score threshold applies to the fused scores, as it does after test-time views. One given
   must be at least every member's exported threshold (below a member's, its graph has already
   dropped what a lower one would keep, so it is refused); none given, it is the lowest of them,
   the least any member keeps;
5. the result is the first member's scene (its footprint, GSD and notes) with every member's
   notes once each, and the tiles, seconds and detections outside the area summed over members.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from scalemae_det.base import checks
from scalemae_det.base.errors import ParameterError
from scalemae_det.base.metadata import DEFAULT_TTA_IOU
from scalemae_det.runtime.detector import Detector, SceneResult
from scalemae_det.runtime.inputs import Source
from scalemae_det.runtime.tta import fuse


def check(iou_threshold: float) -> None:
    """The fusion threshold, checked before any work (predict's plan and the constructor)."""
    checks.number("ensemble_iou", iou_threshold, lo=0, hi=1, lo_open=True, hi_open=True)


class Ensemble:
    """Detectors whose detections of a scene are fused (the module's rules 1-5)."""

    def __init__(self, members: Sequence[Detector], iou_threshold: float = DEFAULT_TTA_IOU):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two models, got {len(members)}")
        check(iou_threshold)
        names = [_name(m) for m in members]
        files = [os.path.realpath(n) for n in names]
        for k, name in enumerate(names):  # rule 1
            if files[k] in files[:k]:
                raise ParameterError("model", "given twice; each model counts once", value=name)
            if members[k].metadata.class_names != members[0].metadata.class_names:
                raise ParameterError(
                    "model",
                    f"classes {members[k].metadata.class_names}, where "
                    f"{os.path.basename(names[0])} has {members[0].metadata.class_names}: an "
                    "ensemble's models need the same classes in the same order",
                    value=name,
                )
        self.members = list(members)
        self.iou_threshold = iou_threshold
        self.metadata = members[0].metadata

    @property
    def provider(self) -> str:
        return ", ".join(dict.fromkeys(m.provider for m in self.members))

    def threshold(self, score_threshold: float | None) -> float:
        """Rule 4: each member refuses one below its own; none given, the lowest of their own."""
        own = [m.threshold(score_threshold) for m in self.members]
        return min(own) if score_threshold is None else score_threshold

    def detect_scene(
        self,
        path: str | os.PathLike | Source,
        *,
        score_threshold: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        **options,
    ) -> SceneResult:
        """`Detector.detect_scene` over every member, then fused; `progress(done, total)` counts
        the tiles of all members, the total growing as each member opens the scene."""
        start = time.perf_counter()
        thr = self.threshold(score_threshold)
        results: list[SceneResult] = []
        before = 0  # tiles of the members already run
        for member in self.members:  # rule 2
            on_tiles = None
            if progress:
                on_tiles = lambda done, total, b=before: progress(b + done, b + total)  # noqa: E731
            result = member.detect_scene(path, progress=on_tiles, **options)
            before += len(result.scene.tiles)
            results.append(result)
        fused = fuse([r.detections for r in results], self.iou_threshold)  # rule 3
        first = results[0]  # rule 5
        return SceneResult(
            first.scene,
            fused.take(fused.scores >= thr),  # rule 4
            first.class_names,
            self.provider,
            tiles_run=sum(r.tiles_run for r in results),
            tiles_skipped=sum(r.tiles_skipped for r in results),
            seconds=time.perf_counter() - start,
            run_seconds=sum(r.run_seconds for r in results),
            notes=list(dict.fromkeys(note for r in results for note in r.notes)),
            outside_area=sum(r.outside_area for r in results),
        )


def _name(detector: Detector) -> str:
    path = getattr(detector.session, "path", None)
    return str(path) if path is not None else f"model {id(detector.session):x}"
