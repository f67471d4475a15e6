"""GPU check, for a machine with one NVIDIA GPU (under 10 minutes): throughput of vit_large_patch16
at tile 800,
batch 4 (random weights) on CUDA fp32/fp16 and TensorRT fp16/int8, and the int8 accuracy gate's
figures on each.

    .venv/bin/python -m bench.gpu_check --out gpu_check_out          # on the GPU machine
    .venv/bin/python -m bench.gpu_check --smoke --out /tmp/smoke     # plumbing only, CPU, tiny
    model, tile 256

NOT YET RUN ON A GPU: no GPU has been lent to this project so far; `--smoke` runs every stage on
the CPU provider with vit_tiny_patch16 to check the script itself (49 s on the 2-core machine).
Expected time on a GPU machine, by estimate only: ViT-L traces (about 60 s each for float32 and
fp16 on the CPU, as measured here), its quantization (pre-processing and quantize_static on the
CPU, calibration on CUDA: 2-4 min), two TensorRT engine builds (minutes each; cached under
~/.cache/scalemae-det/tensorrt for a rerun). If it runs long, lower --calibration-tiles and
--passes.

Stages (each timed, results appended to OUT/gpu_check.json and printed as a markdown table):
1. exports: vit_large_patch16 with random weights, float32 and fp16 (`export_onnx`, no onnxslim, no
   PyTorch parity, which would run ViT-L on the CPU), and int8 (`export.quantize` of the float32
   graph, calibrated on CUDA with tiles of a generated scene read by the runtime's reader);
   the bundled model at the same tile and batch through the full `--precision int8` export (with the
   gate).
2. per configuration, through the runtime's own Session (so the int8 TensorRT switch is the one
   predict uses): cuda/fp32, cuda/fp16, tensorrt/fp16 (the fp16 graph), tensorrt/int8 (the QDQ
   graph, `trt_int8_enable`, explicit quantization): tiles/s over --passes batches after a warm-up
   (the TensorRT engine build is timed apart), and precision/recall against CPU float32 on held-out
   tiles of a generated scene (same class, IoU >= 0.5: export.agreement), for the bundled model
   (meaningful) and for ViT-L (random weights: indicative only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.bench_precision import GSD, exports

CONFIGS = (("cuda", "fp32"), ("cuda", "fp16"), ("tensorrt", "fp16"), ("tensorrt", "int8"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def random_checkpoint(name: str, path: Path) -> Path:
    import torch

    from scalemae_det.models.detector import build_detector
    from scalemae_det.models.weights import detector_state

    torch.manual_seed(0)
    torch.save(detector_state(build_detector(name, 3).eval(), ["a", "b", "c"], GSD), path)
    return path


def check(
    name: str, paths: dict[str, Path], held_out: np.ndarray, configs, passes: int, smoke: bool
) -> list[dict]:
    from scalemae_det.export.agreement import agreement
    from scalemae_det.runtime.session import Session

    reference_session = Session(paths["fp32"], "cpu")
    reference = reference_session.run(held_out)
    threshold = reference_session.metadata.score_threshold
    del reference_session
    rows = []
    for provider, precision in configs:
        row = {"model": name, "provider": provider, "precision": precision}
        try:
            t0 = time.perf_counter()
            session = Session(paths[precision], "cpu" if smoke else provider)
            row["session_s"] = time.perf_counter() - t0
            row["providers"] = session.providers
            t0 = time.perf_counter()
            session.run(held_out[: session.batch])  # first run: TensorRT builds its engine here
            row["first_run_s"] = time.perf_counter() - t0
            batch = held_out[: session.batch]
            t0 = time.perf_counter()
            for _ in range(passes):
                session.run(batch)
            row["tiles_per_s"] = passes * len(batch) / (time.perf_counter() - t0)
            got = session.run(held_out)
            p, r, ref_n, got_n = agreement(reference, got, threshold)
            row.update(
                agreement_precision=p,
                agreement_recall=r,
                reference_detections=ref_n,
                detections=got_n,
            )
            del session
        except Exception as exc:  # one failing configuration must not hide the others' figures
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        log(json.dumps(row))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="vit_large_patch16")
    ap.add_argument("--tile", type=int, default=800)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--passes", type=int, default=10, help="timed batches per configuration")
    ap.add_argument("--calibration-tiles", type=int, default=16)
    ap.add_argument("--held-out", type=int, default=8)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CPU only, vit_tiny_patch16, tile 256, batch 2: checks the script",
    )
    args = ap.parse_args()
    if args.smoke:
        args.model, args.tile, args.batch, args.passes, args.calibration_tiles, args.held_out = (
            "vit_tiny_patch16",
            256,
            2,
            2,
            4,
            4,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    import onnxruntime as ort

    from scalemae_det.base.metadata import ModelMetadata
    from scalemae_det.demo import BUNDLED
    from scalemae_det.export.calibration import read_tiles
    from scalemae_det.synthetic import write_scene

    available = ort.get_available_providers()
    log(f"onnxruntime {ort.__version__}, providers {available}")
    if not args.smoke and "CUDAExecutionProvider" not in available:
        sys.exit(
            "error: no CUDAExecutionProvider: install onnxruntime-gpu with its CUDA libraries, or "
            "use --smoke"
        )
    providers = (
        ["CPUExecutionProvider"]
        if args.smoke
        else ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": [], "stages": {}}
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    size = max(1024, 4 * args.tile)
    scene = work / "calibration.tif"
    write_scene(scene, size, seed=51, gsd=GSD)
    write_scene(work / "held_out.tif", size, seed=52, gsd=GSD)
    for name, ckpt in (
        ("bundled", BUNDLED),
        (args.model, random_checkpoint(args.model, work / "random.pt")),
    ):
        t0 = time.perf_counter()
        paths, gate = exports(
            name,
            ckpt,
            work,
            scene,
            tile=args.tile,
            batch=args.batch,
            calibration_tiles=args.calibration_tiles,
            providers=providers,
            log=log,
        )
        if gate:
            log(gate)
        results["stages"][f"{name} exports"] = time.perf_counter() - t0
        meta = ModelMetadata.from_file(paths["fp32"])
        held_out = read_tiles([work / "held_out.tif"], meta, 0, args.held_out).held_out
        t0 = time.perf_counter()
        results["rows"] += check(name, paths, held_out, CONFIGS, args.passes, args.smoke)
        results["stages"][f"{name} runs"] = time.perf_counter() - t0
        (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    results["seconds"] = time.perf_counter() - start
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(
        "\n| model | provider | precision | tiles/s | engine/first run s | precision vs CPU fp32 | "
        "recall |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        if "error" in r:
            print(
                f"| {r['model']} | {r['provider']} | {r['precision']} | error: {r['error']} | | | |"
            )
        else:
            print(
                f"| {r['model']} | {r['provider']} | {r['precision']} | {r['tiles_per_s']:.2f} | "
                f"{r['first_run_s']:.1f} | {r['agreement_precision']:.3f} | "
                f"{r['agreement_recall']:.3f} |"
            )
    log(f"done in {results['seconds']:.0f} s; {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
