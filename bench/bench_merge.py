"""`scalemae-det merge`: seconds and peak RSS by the number of scenes in a job (the streaming
claim).

    .venv/bin/python -m bench.bench_merge                    # 3x3 and 6x6 grids of scenes
    .venv/bin/python -m bench.bench_merge --grids 2 4 8 --detections 20000

A job is laid out as predict leaves it, through the runtime's own writers: a grid of scenes
(2000 x 2000 px at 0.5 m, UTM 33N) overlapping their neighbours by --overlap metres, each with a
GeoJSON output (runtime.outputs.write) and a run record (runtime.records.RunRecord). Objects are
drawn in ground coordinates, so one in an overlap is in both scenes' outputs (cut where a scene's
edge crosses it) and merge has real duplicates to remove. Each merge runs in its own process, so its
peak RSS (VmHWM, bench_predict.peak_rss_mib) is its own; the claim is that it follows one scene's
detections, not the job's:
a 4x larger job keeps about the same peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_predict import peak_rss_mib

REPO = Path(__file__).resolve().parents[1]
SIDE, GSD, CRS = 2000, 0.5, "EPSG:32633"


def write_job(out: Path, grid: int, per_scene: int, overlap_m: float, seed: int) -> None:
    from affine import Affine
    from rasterio.crs import CRS as RioCRS

    from scalemae_det.runtime.detections import Detections
    from scalemae_det.runtime.detector import SceneResult
    from scalemae_det.runtime.outputs import write
    from scalemae_det.runtime.records import RunRecord, footprint
    from scalemae_det.runtime.scene import Scene
    from scalemae_det.runtime.shards import ALL

    rng = np.random.default_rng(seed)
    step = SIDE * GSD - overlap_m
    extent = step * (grid - 1) + SIDE * GSD
    count = int(per_scene * (extent / (SIDE * GSD)) ** 2)
    xy = rng.uniform(0, extent, (count, 2))
    size = rng.uniform(2, 10, (count, 2))  # metres
    world = np.concatenate([xy, xy + size], 1)
    scores, labels = rng.uniform(0.05, 1, count).astype(np.float32), rng.integers(1, 4, count)
    out.mkdir(parents=True)
    names = [f"r{r:02d}c{c:02d}.tif" for r in range(grid) for c in range(grid)]
    crs = RioCRS.from_string(CRS)
    with RunRecord(
        out,
        ALL,
        names,
        names,
        "bench.onnx",
        "0" * 64,
        ["vehicle", "building", "tank"],
        "cpu",
        "geojson",
    ) as record:
        for name in names:
            r, c = int(name[1:3]), int(name[4:6])
            x0, y0 = 400_000 + c * step, 5_000_000 - r * step
            transform = Affine(GSD, 0, x0, 0, -GSD, y0)
            # world (x right, y up from the job's top-left) -> this scene's pixels, clipped to it
            px = (
                np.stack(
                    [
                        world[:, 0] - c * step,
                        world[:, 1] - r * step,
                        world[:, 2] - c * step,
                        world[:, 3] - r * step,
                    ],
                    1,
                )
                / GSD
            )
            inside = (px[:, 0] < SIDE) & (px[:, 2] > 0) & (px[:, 1] < SIDE) & (px[:, 3] > 0)
            boxes = np.clip(px[inside], 0, SIDE)
            keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
            det = Detections(boxes[keep], scores[inside][keep], labels[inside][keep])
            scene = Scene(
                str(out / name), SIDE, SIDE, crs, transform, GSD, [1, 2, 3], None, 1.0, []
            )
            target = out / name.replace(".tif", ".geojson")
            write(
                SceneResult(scene, det, ["vehicle", "building", "tank"], "cpu"),
                target,
                "geojson",
                "native",
            )
            record.scene(
                name, target, "ok", detections=len(det), tiles=1, footprint=footprint(scene)
            )


def child(out: str, to: str) -> None:
    from scalemae_det.runtime.job_layer import merge_job

    start = time.perf_counter()
    report = merge_job(out, to, crs="EPSG:4326")
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "scenes": report.scenes,
                "pairs": report.overlapping_pairs,
                "detections": report.detections,
                "kept": report.kept,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--grids", type=int, nargs="+", default=[3, 6], help="scenes per side of each job"
    )
    parser.add_argument(
        "--detections", type=int, default=20000, help="detections per scene (about)"
    )
    parser.add_argument(
        "--overlap", type=float, default=100.0, help="metres shared by neighbouring scenes"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the jobs go (default: a temp dir)"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_merge_"))
    print("| scenes | detections | removed | pairs of overlapping scenes | seconds | peak RSS |")
    print("|---|---|---|---|---|---|")
    for grid in args.grids:
        out = workdir / f"job_{grid}x{grid}"
        if not out.exists():
            write_job(out, grid, args.detections, args.overlap, seed=grid)
        to = workdir / f"all_{grid}x{grid}.gpkg"
        to.unlink(missing_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", __spec__.name, "--child", str(out), str(to)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        m = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"| {m['scenes']} | {m['detections']:,} | {m['detections'] - m['kept']:,} | "
            f"{m['pairs']} | "
            f"{m['seconds']:.1f} | {m['peak_rss_mib']:.1f} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
