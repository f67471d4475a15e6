"""Scene throughput (megapixels/s), the share of wall time outside session.run, and peak RSS by
scene size.

    .venv/bin/python -m bench.bench_predict                          # ONNX stand-in, 2k and 16k
    scenes
    .venv/bin/python -m bench.bench_predict --model tiny.onnx --sizes 2048 --threads 2
    .venv/bin/python -m bench.bench_predict --model m.onnx --provider cuda   # on a GPU machine

Scenes are synthetic GeoTIFFs (`scalemae_det.synthetic.write_scene`, at the model's GSD, cached in
--workdir). Each measurement runs `runtime.Detector.detect_scene` in its own process, so its peak
RSS (VmHWM, see peak_rss_mib) belongs to that scene alone; the streaming claim is that the 16k
scene's peak stays within 1.25x of the 2k scene's. Without --model a cheap ONNX stand-in
(scalemae_det/synthetic/standin.py, tile 512) is used: it makes the runtime's own costs (reading,
tiling, merging) visible, which a real detector's inference hides; pass an exported model for real
throughput.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    """This process's peak resident memory since its exec (VmHWM). Not ru_maxrss: Linux carries the
    parent's high-water mark into a child's across fork and exec, so a child would report its
    parent's."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def child(model: str, scene: str, provider: str, threads: int) -> None:
    """Run one scene and print what was measured as JSON (runs torch-free, in its own process)."""
    from scalemae_det.runtime import Detector

    detector = Detector(model, provider, threads=threads or None)
    result = detector.detect_scene(scene)
    scene_info = result.scene
    print(
        json.dumps(
            {
                "seconds": result.seconds,
                "run_seconds": result.run_seconds,
                "tiles": result.tiles_run,
                "skipped": result.tiles_skipped,
                "detections": len(result.detections),
                "megapixels": scene_info.width * scene_info.height / 1e6,
                "provider": result.provider,
                "tile": detector.metadata.tile,
                "batch": detector.session.batch,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def standin(path: Path) -> Path:
    from scalemae_det.synthetic.standin import build_model, metadata

    return build_model(path, metadata(gsd=0.5, tile=512, batch=4, max_detections=100))


def scene(workdir: Path, size: int, gsd: float) -> Path:
    from scalemae_det.synthetic import write_scene

    path = workdir / f"scene_{size}_{gsd:g}.tif"
    if not path.exists():
        print(f"writing a {size} x {size} synthetic scene ({gsd:g} m) to {path} ...", flush=True)
        write_scene(path, size, seed=size, gsd=gsd)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="exported scalemae-det ONNX model (default: the stand-in)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[2048, 16384], help="scene sides in pixels"
    )
    parser.add_argument("--provider", default="cpu", help="auto | tensorrt | cuda | cpu")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime CPU threads (0: all)")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scalemae-det-bench"
    )
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SCENE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.provider, args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else standin(args.workdir / "standin.onnx")
    from scalemae_det.runtime.session import Session

    gsd = Session(model, "cpu").metadata.gsd
    rows = []
    for size in args.sizes:
        path = scene(args.workdir, size, gsd)
        cmd = [
            sys.executable,
            "-m",
            __spec__.name,  # this module, run from the repo root as the user ran it
            "--child",
            str(model),
            str(path),
            "--provider",
            args.provider,
            "--threads",
            str(args.threads),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"the measurement failed:\n{proc.stderr[-3000:]}")
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        outside = 1 - m["run_seconds"] / m["seconds"]
        rows.append(m)
        print(
            f"{size:>6} px  {m['megapixels']:8.1f} MP  {m['tiles']:6d} tiles ({m['skipped']} "
            "skipped)  "
            f"{m['megapixels'] / m['seconds']:7.2f} MP/s  {m['tiles'] / m['seconds']:7.1f} tiles/s "
            " "
            f"outside session.run {outside:6.1%}  peak RSS {m['peak_rss_mib']:7.1f} MiB  "
            f"{m['detections']} detections  [{m['provider']}, tile {m['tile']}, batch "
            f"{m['batch']}]",
            flush=True,
        )
    if len(rows) > 1:
        print(
            f"peak RSS {args.sizes[-1]} px / {args.sizes[0]} px: "
            f"{rows[-1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.3f}x (model: {model.name})"
        )


if __name__ == "__main__":
    main()
