"""float32 vs fp16 vs int8 exports in ONNX Runtime on this machine: tiles/s per model, and AP50 of
the bundled model.

    .venv/bin/python -m bench.bench_precision --models bundled vit_base_patch16 --threads 2
    .venv/bin/python -m bench.bench_precision --models vit_large_patch16 --threads 2 --rounds 2

Each model is exported at --tile, batch 1, without onnxslim: float32 and fp16 with `export_onnx`,
int8 with the library's quantization (export.quantize) of the float32 graph, calibrated on a
generated scene read by the runtime's reader. The bundled model goes through the full `--precision
int8` export instead (calibration, then the accuracy gate against float32 on held-out tiles), and
its three exports are scored (AP50, pycocotools) by the runtime over another generated scene.
vit_base and vit_large get random weights: fine for speed, meaningless for accuracy, so they skip
the gate.

Timing: one session per precision, `--threads` intra-op threads; the precisions take turns, one
pass of `--tiles` tiles each per round, and the median pass counts, so that load from other jobs
on a shared machine hits all precisions alike. Beside wall-clock tiles/s, the process CPU seconds
per tile are reported (best pass; onnxruntime's spin-waiting is switched off so that they count
work, not waiting): on a machine shared with other jobs, wall time measures the neighbours too.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

GSD = 0.5
PRECISIONS = ("fp32", "fp16", "int8")


def checkpoint_for(name: str, work: Path) -> Path:
    import torch

    from scalemae_det.demo import BUNDLED
    from scalemae_det.models.detector import build_detector
    from scalemae_det.models.weights import detector_state

    if name == "bundled":
        return BUNDLED
    path = work / f"{name}.pt"
    torch.manual_seed(0)
    torch.save(detector_state(build_detector(name, 3).eval(), ["a", "b", "c"], GSD), path)
    return path


def exports(
    name: str,
    ckpt: Path,
    work: Path,
    calibration: Path,
    *,
    tile: int,
    batch: int,
    calibration_tiles: int,
    providers: list[str] | None = None,
    log=print,
) -> tuple[dict[str, Path], str]:
    """precision -> model path, and the int8 gate's summary (bundled model only: the others have
    random weights, so their int8 graph is quantized without the gate, on `providers`)."""
    from scalemae_det.base.metadata import ModelMetadata
    from scalemae_det.export.calibration import read_tiles
    from scalemae_det.export.onnx_export import export_onnx, int8_model
    from scalemae_det.export.options import ExportSpec

    base = dict(gsd=GSD, tile=tile, batch=batch, simplify=False, validate=False)
    paths, gate = {}, ""
    for precision in ("fp32", "fp16"):
        t0 = time.perf_counter()
        paths[precision] = export_onnx(
            ckpt, work / f"{name}_{precision}.onnx", ExportSpec(**base, precision=precision)
        ).path
        log(f"  {name} {precision}: exported in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    out = work / f"{name}_int8.onnx"
    if name == "bundled":
        spec = ExportSpec(
            **base,
            precision="int8",
            calibration=(str(calibration),),
            calibration_tiles=calibration_tiles,
        )
        gate = export_onnx(ckpt, out, spec).report.summary()
    else:
        meta = ModelMetadata.from_file(paths["fp32"])
        tiles = read_tiles([calibration], meta, calibration_tiles, 0).calibration
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            graph = int8_model(paths["fp32"], meta, tiles, Path(scratch), providers=providers)[0]
            os.replace(graph, out)
    paths["int8"] = out
    log(f"  {name} int8: calibrated and quantized in {time.perf_counter() - t0:.0f} s")
    return paths, gate


def throughput(
    paths: dict[str, Path], tile: int, threads: int, rounds: int, count: int
) -> tuple[dict[str, float], dict[str, float]]:
    """precision -> tiles/s (median pass), and -> CPU seconds per tile (best pass); precisions
    interleaved."""
    import onnxruntime as ort

    sessions = {}
    for precision, path in paths.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[precision] = ort.InferenceSession(
            str(path), opts, providers=["CPUExecutionProvider"]
        )
    rng = np.random.default_rng(0)
    tiles = rng.uniform(0.2, 0.6, (count, 1, 3, tile, tile)).astype(np.float32)
    for s in sessions.values():
        s.run(None, {"images": tiles[0]})  # warm-up
    passes, cpu = {p: [] for p in sessions}, {p: [] for p in sessions}
    for _ in range(rounds):
        for precision, s in sessions.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for x in tiles:
                s.run(None, {"images": x})
            passes[precision].append(count / (time.perf_counter() - t0))
            cpu[precision].append((time.process_time() - c0) / count)
    return {p: statistics.median(v) for p, v in passes.items()}, {p: min(v) for p, v in cpu.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        nargs="+",
        default=["bundled", "vit_base_patch16"],
        help="bundled, vit_tiny_patch16, vit_base_patch16, vit_large_patch16",
    )
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=4, help="tiles per timed pass")
    ap.add_argument("--calibration-tiles", type=int, default=16)
    ap.add_argument(
        "--scene-size",
        type=int,
        default=3072,
        help="side of the generated calibration and test scenes",
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the exports here (default: a temporary folder)",
    )
    args = ap.parse_args()

    from scalemae_det.export.agreement import runtime_ap50
    from scalemae_det.synthetic import write_scene

    with tempfile.TemporaryDirectory(prefix="bench_precision.") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        calibration, test = work / "calibration.tif", work / "test.tif"
        write_scene(calibration, args.scene_size, seed=41, gsd=GSD)
        write_scene(test, args.scene_size, seed=42, gsd=GSD)
        rows = []
        for name in args.models:
            print(f"{name}:", flush=True)
            paths, gate = exports(
                name,
                checkpoint_for(name, work),
                work,
                calibration,
                tile=args.tile,
                batch=1,
                calibration_tiles=args.calibration_tiles,
            )
            rates, cpu = throughput(paths, args.tile, args.threads, args.rounds, args.tiles)
            ap50 = (
                {p: runtime_ap50(paths[p], work / "test.json", work, provider="cpu") for p in paths}
                if name == "bundled"
                else {}
            )
            sizes = {p: paths[p].stat().st_size / 2**20 for p in paths}
            for p in PRECISIONS:
                rows.append(
                    (
                        name,
                        p,
                        rates[p],
                        rates[p] / rates["fp32"],
                        cpu[p],
                        cpu["fp32"] / cpu[p],
                        sizes[p],
                        ap50.get(p),
                    )
                )
                print(
                    f"  {p}: {rates[p]:.3f} tiles/s ({rates[p] / rates['fp32']:.2f}x), "
                    f"{cpu[p]:.2f} CPU s/tile "
                    f"({cpu['fp32'] / cpu[p]:.2f}x), {sizes[p]:.0f} MiB"
                    + (f", AP50 {ap50[p]:.3f}" if p in ap50 else ""),
                    flush=True,
                )
            if gate:
                print(f"  {gate}", flush=True)
            for path in paths.values():
                path.unlink()
            gc.collect()
        print(
            f"\ntile {args.tile}, batch 1, {args.threads} threads, median of {args.rounds} passes "
            f"of {args.tiles} tiles\n"
        )
        print(
            "| model | precision | tiles/s | vs fp32 | CPU s/tile | vs fp32 | MiB | AP50 "
            "|\n|---|---|---|---|---|---|---|---|"
        )
        for name, p, rate, ratio, cpu_s, cpu_ratio, size, ap in rows:
            print(
                f"| {name} | {p} | {rate:.3f} | {ratio:.2f}x | {cpu_s:.2f} | {cpu_ratio:.2f}x | "
                f"{size:.0f} | "
                f"{'-' if ap is None else f'{ap:.3f}'} |"
            )


if __name__ == "__main__":
    main()
