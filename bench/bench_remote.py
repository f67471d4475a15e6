"""The same scene read from a local file and over HTTP from a range server with a per-request
latency: wall time and bytes read, with and without the prefetcher, and the bytes a quarter of the
scene (an area of interest) costs.

    python -m bench.bench_remote                                 # stand-in model, 4096 px COG
    python -m bench.bench_remote --latency-ms 50 --size 2048
    python -m bench.bench_remote --model exported.onnx --threads 2

Run from the repository root as a module (the test servers are imported as tests.helpers.servers).
The scene is synthetic (scalemae_det.synthetic.write_scene) rewritten as a Cloud Optimized GeoTIFF
by rasterio's COG driver (DEFLATE, 512 px blocks, overviews: what a producer publishes), served by
tests/helpers/servers.RangeServer on 127.0.0.1, which sleeps `latency` before each answer (the
round trip of a far server) and counts the body bytes it sends. Each run is its own process, so
GDAL's process-wide cache of remote bytes never serves one run what another fetched, and each run
is timed in the child (from open to detections, as `detect_scene` reports it). GDAL settings are
the runtime's defaults (base/remote.py), nothing tuned for the benchmark.

Without --model a cheap ONNX stand-in (scalemae_det/synthetic/standin.py) at tile 512 is used: its
inference is far cheaper than a real detector's, so the latency the prefetcher must hide is a
larger share of the run than it would be with a real model; pass an exported model for that.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = ("local", "remote", "remote, no prefetch")


def child(model: str, scene: str, prefetch: bool, threads: int, aoi: str | None) -> None:
    """One scene in this process; prints what was measured as JSON."""
    from scalemae_det.runtime import Detector

    area = None
    if aoi:
        from scalemae_det.runtime.aoi import read_area

        area = read_area(aoi)
    detector = Detector(model, "cpu", threads=threads or None)
    result = detector.detect_scene(scene, prefetch=prefetch, area=area)
    print(
        json.dumps(
            {
                "seconds": result.seconds,
                "run_seconds": result.run_seconds,
                "tiles": result.tiles_run,
                "detections": len(result.detections),
                "boxes": result.detections.boxes.round(3).tolist(),
            }
        )
    )


def measure(model: Path, scene: str, prefetch: bool, threads: int, aoi: Path | None = None):
    command = [sys.executable, "-m", "bench.bench_remote", "--child", str(model), scene]
    command += ["--threads", str(threads)] + ([] if prefetch else ["--no-prefetch"])
    command += ["--aoi", str(aoi)] if aoi else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"a run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_scene(folder: Path, size: int, gsd: float) -> Path:
    """A synthetic scene as a DEFLATE COG with 512 px blocks."""
    import rasterio

    from scalemae_det.synthetic import write_scene

    plain = folder / "plain.tif"
    write_scene(plain, size, seed=size, gsd=gsd)
    cog = folder / "scene.tif"
    with rasterio.open(plain) as ds:
        profile = {
            **ds.profile,
            "driver": "COG",
            "blocksize": 512,
            "compress": "DEFLATE",
            "overviews": "AUTO",
        }
        for key in ("blockxsize", "blockysize", "tiled", "interleave"):
            profile.pop(key, None)
        with rasterio.open(cog, "w", **profile) as out:
            out.write(ds.read())
    return cog


def quarter(path: Path, scene: Path) -> Path:
    """The upper-left quarter of `scene` as a polygon in its own CRS (a GeoJSON with a crs)."""
    import rasterio

    with rasterio.open(scene) as ds:
        (x0, y0), (x1, y1) = ds.transform * (0, 0), ds.transform * (ds.width / 2, ds.height / 2)
        epsg = ds.crs.to_epsg()
    ring = [[x0, y0], [x0, y1], [x1, y1], [x1, y0], [x0, y0]]
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="exported ONNX model (default: the stand-in)")
    parser.add_argument("--size", type=int, default=4096, help="scene side, px")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="sleep before each answer")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each kind; the best kept")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SCENE"), help=argparse.SUPPRESS)
    parser.add_argument("--no-prefetch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--aoi", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, not args.no_prefetch, args.threads, args.aoi)
        return

    from tests.helpers.servers import RangeServer

    work = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    try:
        if args.model:
            model = Path(args.model)
        else:
            from scalemae_det.synthetic.standin import build_model, metadata

            model = build_model(work / "standin.onnx", metadata(gsd=0.5, tile=512, batch=4))
        www = work / "www"
        www.mkdir()
        print(f"writing a {args.size} px COG ...", flush=True)
        scene = make_scene(www, args.size, 0.5)
        size = scene.stat().st_size
        aoi = quarter(work / "quarter.geojson", scene)
        best: dict[str, dict] = {}
        with RangeServer(www, latency=args.latency_ms / 1000) as server:
            url = server.url("scene.tif")
            for _ in range(args.repeats):
                for name, where, prefetch in zip(RUNS, (str(scene), url, url), (True, True, False)):
                    server.reset_counts()
                    got = measure(model, where, prefetch, args.threads)
                    got["sent"], got["requests"] = server.sent_bytes(), server.requests()
                    if name not in best or got["seconds"] < best[name]["seconds"]:
                        best[name] = got
            server.reset_counts()
            part = measure(model, url, True, args.threads, aoi)
            part["sent"], part["requests"] = server.sent_bytes(), server.requests()
        same = best["remote"]["boxes"] == best["local"]["boxes"]
        local = best["local"]["seconds"]
        print(
            f"scene {args.size} x {args.size} px, COG {size / 1e6:.2f} MB; model {model.name}; "
            f"latency {args.latency_ms:g} ms per request; best of {args.repeats}"
        )
        print(f"{'run':<22}{'wall s':>8}{'x local':>9}{'MB sent':>9}{'requests':>10}{'tiles':>7}")
        for name in RUNS:
            r = best[name]
            sent = f"{r['sent'] / 1e6:.2f}" if name != "local" else "-"
            requests = str(r["requests"]) if name != "local" else "-"
            print(
                f"{name:<22}{r['seconds']:>8.2f}{r['seconds'] / local:>9.2f}{sent:>9}"
                f"{requests:>10}{r['tiles']:>7}"
            )
        print(
            f"{'remote, quarter AOI':<22}{part['seconds']:>8.2f}{part['seconds'] / local:>9.2f}"
            f"{part['sent'] / 1e6:>9.2f}{part['requests']:>10}{part['tiles']:>7}"
        )
        print(
            f"bytes sent / file: whole scene {best['remote']['sent'] / size:.2f}, quarter AOI "
            f"{part['sent'] / size:.2f}; detections identical to the local file's: {same}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
