"""Evaluation over a dataset on every rank: each rank predicts its share, rank 0 scores them all."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path

from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, Dataset

from scalemae_det.base import checks
from scalemae_det.base.errors import ParameterError
from scalemae_det.data.coco import collate
from scalemae_det.data.labels import read_coco_json
from scalemae_det.data.transforms import EvalTransform
from scalemae_det.engine.data import DataSplit, load_split
from scalemae_det.engine.distributed import DistInfo, gather_to_main, init_distributed, shutdown
from scalemae_det.engine.loop import AMP_CHOICES, predict_batches, resolve_amp
from scalemae_det.engine.progressbar import progress_bar
from scalemae_det.engine.sampling import eval_indices
from scalemae_det.metrics.coco_ap import detections_to_coco, evaluate_detections
from scalemae_det.metrics.report import print_metrics, write_results
from scalemae_det.metrics.scenes import chip_records, read_truth, score_scenes, stitch_chips
from scalemae_det.metrics.xview_ap import COUNTINGS
from scalemae_det.models.weights import load_detector


def gather_detections(local: list[dict], info: DistInfo) -> list[dict] | None:
    """All ranks' COCO results on rank 0 (None elsewhere), in image-id order.

    Each image is predicted by exactly one rank, so a stable sort by image id gives the list a
    single process would produce, whatever the number of ranks.
    """
    parts = gather_to_main(local, info)
    return (
        None if parts is None else sorted(chain.from_iterable(parts), key=lambda d: d["image_id"])
    )


def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    category_ids: Sequence[int],
    info: DistInfo,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    amp: str = "off",
) -> list[dict] | None:
    """COCO results (original image pixels, label-file category ids) for every image of `dataset`,
    on rank 0."""
    indices = eval_indices(len(dataset), info.rank, info.world_size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=info.device.type == "cuda",
    )
    local = []
    with progress_bar("evaluating", len(dataset), info.is_main) as advance:
        for output, target in predict_batches(
            model, loader, info, amp=amp, on_batch=lambda n: advance(n * info.world_size)
        ):
            local += detections_to_coco([output], [target], category_ids)
    return gather_detections(local, info)


def evaluate_split(
    model: nn.Module,
    split: DataSplit,
    info: DistInfo,
    *,
    ignore_category_ids: Sequence[int] = (),
    xview_counting: str = "corrected",
    **kwargs,
) -> tuple[dict, list[dict]] | None:
    """(metrics, detections) on rank 0, None on the other ranks; `kwargs` as for `predict_dataset`.

    COCO AP counts up to the model's own detections per image (not pycocotools' 100).
    """
    detections = predict_dataset(model, split.dataset, split.category_ids, info, **kwargs)
    if detections is None:
        return None
    max_dets = getattr(model, "module", model).config.detections_per_image
    return evaluate_detections(
        split.coco,
        detections,
        ignore_category_ids=ignore_category_ids,
        max_dets=max_dets,
        xview_counting=xview_counting,
    ), detections


def evaluate_checkpoint(
    checkpoint: Path,
    image_dir: Path,
    label_file: Path,
    *,
    out: Path,
    detections: Path | None = None,
    input_size: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    amp: str = "auto",
    num_workers: int = 2,
    bands: Sequence[int] | None = None,
    ignore_category_ids: Sequence[int] = (),
    xview_counting: str = "corrected",
    scene_labels: Path | None = None,
) -> dict | None:
    """`scalemae-det evaluate`: score a train.py checkpoint, alone or under torchrun. Metrics on
    rank 0.

    Every value and both output paths are checked before the model is loaded, so a typo in `out`
    fails at once instead of after the whole evaluation.

    `scene_labels` (COCO in scene pixels, `prepare-xview`'s `<split>_scenes.json`): score at scene
    level instead, the chips' detections stitched into their scenes and merged at the seams as
    predict merges tiles (`metrics.scenes.stitch_chips`); `detections` then holds the scene
    detections.
    """
    checks.number("input_size", input_size, lo=32, integer=True)
    checks.number("batch_size", batch_size, lo=1, integer=True)
    checks.number("num_workers", num_workers, lo=0, integer=True)
    checks.choice("amp", amp, AMP_CHOICES)
    checks.choice("xview_counting", xview_counting, COUNTINGS)
    bands = checks.bands("bands", bands)
    checks.output_file(out, "out")
    if detections is not None:
        checks.output_file(detections, "detections")
    if scene_labels is not None and not Path(scene_labels).is_file():
        raise ParameterError(
            "scene_labels",
            "no such file (prepare-xview writes it as <split>_scenes.json)",
            value=scene_labels,
        )
    info = init_distributed(device)
    try:
        console = Console(stderr=True, quiet=not info.is_main)
        scenes = None
        if scene_labels is not None:  # read first: a bad file fails before the model loads
            scenes = (
                read_truth(scene_labels),
                chip_records(read_coco_json(label_file), label_file),
            )
        model, ckpt = load_detector(checkpoint)
        trained = ckpt.get("args", {})
        transform = EvalTransform(input_size or trained.get("input_size", 800))
        split = load_split(
            image_dir,
            label_file,
            transform=transform,
            default_gsd=trained.get("gsd", ckpt["gsd"]),
            bands=bands or trained.get("bands"),
            class_names=ckpt["class_names"],
        )
        console.print(
            f"{checkpoint}: {ckpt['config']['name']}, {len(ckpt['class_names'])} classes; "
            f"{len(split.dataset)} images, {info.world_size} process(es) on {info.device}"
        )
        options = {
            "batch_size": batch_size,
            "num_workers": num_workers,
            "amp": resolve_amp(amp, info.device),
        }
        if scenes is None:
            result = evaluate_split(
                model.to(info.device),
                split,
                info,
                ignore_category_ids=ignore_category_ids,
                xview_counting=xview_counting,
                **options,
            )
        else:
            chip_detections = predict_dataset(
                model.to(info.device), split.dataset, split.category_ids, info, **options
            )
            result = (
                None
                if chip_detections is None
                else _score_scene_level(
                    chip_detections,
                    *scenes,
                    split.category_ids,
                    ignore_category_ids,
                    xview_counting,
                )
            )
        if result is None:
            return None
        metrics, found = result
        print_metrics(metrics, console)
        write_results(out, metrics)
        if detections:
            write_results(detections, found)
        console.print(f"wrote {out}" + (f" and {detections}" if detections else ""))
        return metrics
    finally:
        shutdown()


def _score_scene_level(
    chip_detections: list[dict],
    scene_truth: dict,
    chips: dict[int, dict],
    category_ids: Sequence[int],
    ignore_category_ids: Sequence[int],
    xview_counting: str,
) -> tuple[dict, list[dict]]:
    """Scene-level metrics over the model's categories, and the stitched scene detections."""
    keep = set(category_ids)
    scene_truth = {
        **scene_truth,
        "categories": [c for c in scene_truth["categories"] if c["id"] in keep],
        "annotations": [a for a in scene_truth.get("annotations", []) if a["category_id"] in keep],
    }
    detections = stitch_chips(chip_detections, chips, scene_truth)
    metrics = score_scenes(
        scene_truth,
        detections,
        xview_counting=xview_counting,
        ignore_category_ids=ignore_category_ids,
    )
    return {"level": "scene", **metrics}, detections
