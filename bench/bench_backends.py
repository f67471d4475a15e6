"""Scene throughput of the bundled model: ONNX Runtime vs PyTorch eager vs SAHI, same tiles, and
their AP@0.5.

    .venv/bin/python -m bench.bench_backends                         # 10240 px scene, 2 threads
    .venv/bin/python -m bench.bench_backends --size 6144 --backends ort torch
    .venv/bin/python -m bench.bench_backends --sahi-path /tmp/sahi-pkgs

Backends (each in its own process, after the model is loaded, so the figures are the scene alone):
- `ort`, `ort-b2`: `runtime.Detector.detect_scene` on the exported model (batch 1, batch 2);
- `torch`: the same `detect_scene` (tile plan, window reads, prefetch, seam merge) with only the
  session swapped for the PyTorch model in eager mode, so the difference is the inference engine;
- `sahi`: `sahi.predict.get_sliced_prediction` with the PyTorch model at the same slice size and
  overlap (SAHI lays out the same tiles), its default GREEDYNMM/IOS 0.5 merge, on the scene read
  into memory (the read is counted). SAHI is not a dependency: install it apart, e.g.
  `.venv/bin/pip install --target /tmp/sahi-pkgs --no-deps sahi shapely opencv-python-headless fire
  termcolor`,
  and pass that folder as --sahi-path; it is put on sys.path in the SAHI process only.

The scene (synthetic, at the model's 0.5 m, seed = size, as bench_predict) and the exported models
are cached in --workdir; a cached model is re-exported when the checkpoint changes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scalemae_det.runtime.detections import Detections

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("ort", "ort-b2", "torch", "sahi")


def scene_progress(label: str):
    """A rich progress bar on stderr and its `(done, total)` callback."""
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task(label, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


class TorchSession:
    """A Detector's session made of the PyTorch model, eager, on the same batches as
    onnxruntime's."""

    def __init__(self, model, metadata, batch: int):
        self.model, self.metadata, self.gsd, self.batch = model, metadata, metadata.gsd, batch
        self.providers = ["PyTorch eager CPU"]
        self.run_seconds = 0.0

    @property
    def provider(self) -> str:
        return self.providers[0]

    def run(self, images):
        import torch

        start = time.perf_counter()
        with torch.inference_mode():
            outs = self.model(list(torch.from_numpy(images)), gsd=self.gsd)
        self.run_seconds += time.perf_counter() - start
        return [
            Detections(o["boxes"].numpy(), o["scores"].numpy(), o["labels"].numpy()) for o in outs
        ]


def run_detector(backend: str, args: argparse.Namespace) -> dict:
    """ort / ort-b2 / torch: runtime.Detector.detect_scene; torch only passes another session."""
    from scalemae_det.runtime import Detector
    from scalemae_det.runtime.session import Session

    session = Session(
        args.workdir / f"model_b{2 if backend == 'ort-b2' else 1}.onnx", "cpu", threads=args.threads
    )
    if backend == "torch":
        import torch

        from scalemae_det.models.weights import load_detector

        torch.set_num_threads(args.threads)
        model, _ = load_detector(args.checkpoint)
        session = TorchSession(model, session.metadata, batch=1)
    detector = Detector(session)
    bar, update = scene_progress(backend)
    with bar:
        result = detector.detect_scene(args.scene, overlap=args.overlap, progress=update)
    det = result.detections
    return {
        "tiles": result.tiles_run + result.tiles_skipped,
        "seconds": result.seconds,
        "infer_seconds": result.run_seconds,
        "provider": result.provider,
        "boxes": det.boxes.tolist(),
        "scores": det.scores.tolist(),
        "classes": [result.class_names[k - 1] for k in det.labels.tolist()],
    }


def run_sahi(args: argparse.Namespace) -> dict:
    """sahi.predict.get_sliced_prediction with a DetectionModel wrapping the PyTorch detector."""
    if args.sahi_path:
        sys.path.insert(0, str(args.sahi_path))
    import numpy as np
    import rasterio
    import torch

    try:
        from sahi.models.base import DetectionModel
        from sahi.predict import get_sliced_prediction
        from sahi.prediction import ObjectPrediction
    except ImportError as exc:
        return {
            "error": f"sahi not importable ({exc}); install it apart (see this script's doc) and "
            "pass --sahi-path"
        }

    from scalemae_det.base.pixels import select_bands
    from scalemae_det.models.weights import load_detector

    torch.set_num_threads(args.threads)
    model, ckpt = load_detector(args.checkpoint)
    names = ckpt["class_names"]

    class ScaleMAEDetectionModel(DetectionModel):
        """SAHI's model interface over ScaleMAEDetector: uint8 HWC slice -> [0, 1] CHW, run at the
        model's GSD."""

        infer_seconds, slices = 0.0, 0

        def set_model(self, model, **kwargs):
            self.model = model

        def perform_inference(self, image: np.ndarray) -> None:
            start = time.perf_counter()
            x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
            with torch.inference_mode():
                (self._original_predictions,) = self.model([x], gsd=args.gsd)
            self.infer_seconds += time.perf_counter() - start
            self.slices += 1

        def _create_object_prediction_list_from_original_predictions(
            self, shift_amount_list=((0, 0),), full_shape_list=None
        ):
            out = self._original_predictions
            shift = shift_amount_list[0]
            full = full_shape_list[0] if full_shape_list else None
            self._object_prediction_list_per_image = [
                [
                    ObjectPrediction(
                        bbox=box,
                        category_id=label,
                        category_name=names[label - 1],
                        score=score,
                        shift_amount=shift,
                        full_shape=full,
                    )
                    for box, score, label in zip(
                        out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()
                    )
                    if score >= self.confidence_threshold
                ]
            ]

    threshold = (
        model.roi_heads.score_thresh
    )  # the exported model's threshold too (export defaults to it)
    sahi_model = ScaleMAEDetectionModel(
        model=model,
        device="cpu",
        confidence_threshold=threshold,
        category_mapping={str(i + 1): n for i, n in enumerate(names)},
    )
    bar, update = scene_progress("sahi")
    start = time.perf_counter()
    with rasterio.open(
        args.scene
    ) as ds:  # the bands the runtime would take; uint8, so [0, 1] is /255 as there
        image = np.ascontiguousarray(ds.read(select_bands(ds)).transpose(1, 2, 0))
    read_seconds = time.perf_counter() - start
    with bar:
        # force_postprocess_type: keep SAHI's default merge although the threshold is under its 0.1
        # "low confidence" switch to NMS/IOU; perform_standard_pred would run the model on the whole
        # scene
        result = get_sliced_prediction(
            image,
            sahi_model,
            slice_height=args.tile,
            slice_width=args.tile,
            overlap_height_ratio=args.overlap,
            overlap_width_ratio=args.overlap,
            perform_standard_pred=False,
            force_postprocess_type=True,
            verbose=0,
            progress_callback=update,
        )
    seconds = time.perf_counter() - start
    preds = result.object_prediction_list
    return {
        "tiles": sahi_model.slices,
        "seconds": seconds,
        "infer_seconds": sahi_model.infer_seconds,
        "read_seconds": read_seconds,
        "merge_seconds": result.durations_in_seconds.get("postprocess"),
        "provider": f"sahi {sys.modules['sahi'].__version__} + PyTorch eager CPU",
        "boxes": [p.bbox.to_xyxy() for p in preds],
        "scores": [p.score.value for p in preds],
        "classes": [p.category.name for p in preds],
    }


def child(backend: str, args: argparse.Namespace) -> None:
    out = run_sahi(args) if backend == "sahi" else run_detector(backend, args)
    print(json.dumps(out))


def exported(checkpoint: Path, workdir: Path, gsd: float, tile: int, batch: int) -> Path:
    """The checkpoint exported to ONNX (cached; re-exported when the checkpoint's hash changes)."""
    from scalemae_det.base.digest import sha256_file
    from scalemae_det.export.onnx_export import export_onnx
    from scalemae_det.export.options import ExportSpec
    from scalemae_det.runtime.session import Session

    path = workdir / f"model_b{batch}.onnx"
    if path.exists():
        meta = Session(path, "cpu").metadata
        if (meta.source_sha256, meta.gsd, meta.tile, meta.batch) == (
            sha256_file(checkpoint),
            gsd,
            tile,
            batch,
        ):
            return path
    print(f"exporting {checkpoint.name} to {path} (batch {batch}) ...", flush=True)
    export_onnx(checkpoint, path, ExportSpec(gsd=gsd, tile=tile, batch=batch))
    return path


def coco_detections(m: dict, gt: dict) -> list[dict]:
    """Scene-pixel xyxy boxes and class names -> COCO results keyed to the ground truth's ids."""
    from scalemae_det.base.rows import coco_results

    by_name = {c["name"]: c["id"] for c in gt["categories"]}
    return coco_results(
        gt["images"][0]["id"], m["boxes"], m["scores"], [by_name[name] for name in m["classes"]]
    )


def measure(backend: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        "-m",
        __spec__.name,  # this module, run from the repo root as the user ran it
        "--child",
        backend,
        "--scene",
        str(args.scene),
        "--workdir",
        str(args.workdir),
        "--gsd",
        str(args.gsd),
        "--threads",
        str(args.threads),
        "--overlap",
        str(args.overlap),
        "--tile",
        str(args.tile),
        "--checkpoint",
        str(args.checkpoint),
    ]
    cmd += ["--sahi-path", str(args.sahi_path)] if args.sahi_path else []
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        return {"error": f"its process exited with {proc.returncode} (stderr above)"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10240, help="scene side in pixels")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument(
        "--threads", type=int, default=2, help="intra-op threads, ONNX Runtime and PyTorch alike"
    )
    parser.add_argument(
        "--gsd",
        type=float,
        default=0.5,
        help="scene and export GSD in metres (the bundled model's)",
    )
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument(
        "--checkpoint", type=Path, help="detector checkpoint (default: the bundled tiny model)"
    )
    parser.add_argument(
        "--sahi-path",
        type=Path,
        help="folder holding sahi and its extra dependencies (pip --target)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scalemae-det-bench"
    )
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.checkpoint is None:
        args.checkpoint = REPO / "scalemae_det" / "assets" / "vit_tiny_synthetic.pth"
    if args.child:
        return child(args.child, args)

    from bench.bench_predict import scene
    from scalemae_det.base.atomic import atomic_path
    from scalemae_det.metrics.xview_ap import xview_class_aps

    args.workdir.mkdir(parents=True, exist_ok=True)
    args.scene = scene(args.workdir, args.size, args.gsd)
    gt = json.loads(args.scene.with_suffix(".json").read_text())
    for batch in sorted({2 if b == "ort-b2" else 1 for b in args.backends}):
        exported(args.checkpoint, args.workdir, args.gsd, args.tile, batch)

    megapixels = args.size**2 / 1e6
    print(
        f"scene {args.size} x {args.size} px ({megapixels:.1f} MP, {len(gt['annotations'])} "
        "objects, "
        f"{args.gsd:g} m), tile {args.tile}, overlap {args.overlap}, {args.threads} threads",
        flush=True,
    )
    rows = {}
    for backend in args.backends:
        m = rows[backend] = measure(backend, args)
        if "error" in m:
            print(f"{backend}: failed, {m['error']}", flush=True)
            continue
        dets = coco_detections(m, gt)
        with atomic_path(
            args.workdir / f"detections_{args.size}_{backend}.json"
        ) as tmp:  # for scoring offline
            tmp.write_text(json.dumps(dets))
        aps = xview_class_aps(gt, dets, iou_threshold=0.5)
        m["AP50"] = sum(aps.values()) / len(aps)
        extra = "".join(
            f", {k.split('_')[0]} {m[k]:.1f} s" for k in ("read_seconds", "merge_seconds") if k in m
        )
        print(
            f"{backend}: {m['seconds']:.1f} s ({m['infer_seconds']:.1f} s in inference{extra}) "
            f"[{m['provider']}]",
            flush=True,
        )

    base = rows.get("ort", {}).get("seconds")
    print(
        f"\n{'backend':<8} {'tiles':>6} {'seconds':>8} {'MP/s':>6} {'detections':>10} "
        f"{'AP@0.5':>7} {'time/ORT':>8}"
    )
    for backend, m in rows.items():
        if "error" in m:
            print(f"{backend:<8} failed: {m['error']}")
            continue
        ratio = f"{m['seconds'] / base:.2f}x" if base else "-"
        print(
            f"{backend:<8} {m['tiles']:>6} {m['seconds']:>8.1f} {megapixels / m['seconds']:>6.2f} "
            f"{len(m['scores']):>10} {m['AP50']:>7.3f} {ratio:>8}"
        )
    print(
        "AP@0.5: per-class VOC AP at IoU 0.5 (scalemae_det.metrics.xview_ap.xview_class_aps), "
        "mean over classes;\n"
        "pycocotools' COCOeval matches in Python loops over detections x ground truth: "
        "it did not finish in 18 min on a 10k scene"
    )


if __name__ == "__main__":
    main()
