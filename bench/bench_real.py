"""Held-out accuracy on real imagery, through the commands a user runs.

    python -m bench.bench_real                       # both recipes, ../shared/realimagery
    python -m bench.bench_real --recipes scratch --epochs 10 --work /tmp/real
    python -m bench.bench_real --recipes scratch --work /tmp/real --reuse --tta none

Two NEON crops at 0.1 m with DeepForest's tree-crown boxes (`<shared>/realimagery`, see its
README): the model trains on one and is scored on the other. Each recipe runs, as subprocesses:

1. `scalemae-det prepare` from the training crop's Pascal VOC XML (`--gsd 0.1`: a PNG has no
   georeference), every chip for training (one scene cannot be split by scene);
2. `python train.py` on those chips, from scratch or `--init_from` the bundled model;
3. `scalemae-det export` to ONNX (tile: the checkpoint's training input size);
4. the held-out crop written as a GeoTIFF (EPSG:32612, 0.1 m pixels at its NEON tile's corner;
   the origin is nominal, the GSD is what matters), then `scalemae-det predict` on it (with
   `--tta flip4 --tta-iou 0.4` unless told otherwise: the tile and its mirrors, fused);
5. `scalemae-det prepare` on the held-out crop's XML for its truth in scene pixels
   (`train_scenes.json`), and `scalemae-det score` against it.

Prints and writes (`<work>/bench_real.md`, `<work>/bench_real.json`) one row per recipe: held-out
AP50, COCO AP, AP at IoU 0.4 (DeepForest's matching threshold), detections, duplicates (all / at
tile seams), training and total minutes. The recipes share every training option but the starting
weights; docs/benchmarks-real.md gives the figures and the command. Needs the real crops: it
stops with a message when they are absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

from scalemae_det.runtime.tta import VIEWS

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCENE = "2019_YELL_2_528000_4978000_image_crop2"
HELD_OUT = "2019_YELL_2_541000_4977000_image_crop"
HELD_OUT_CORNER = (541000.0, 4978000.0)  # its NEON tile's north-west corner, EPSG:32612
GSD = 0.1
BUNDLED = REPO / "scalemae_det" / "assets" / "vit_tiny_synthetic.pth"
RECIPES = ("scratch", "init_from")


def cli(*args: str) -> list[str]:
    """A `scalemae-det` command line run by this interpreter (the entry point's own module)."""
    entry = "import sys; from scalemae_det.cli import main; sys.exit(main())"
    return [sys.executable, "-c", entry, *args]


def run(cmd: list[str], log: Path, threads: int) -> float:
    """Run `cmd` with its output in `log`; its wall time in seconds; exits on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        code = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    if code:
        sys.exit(f"failed ({code}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - start


def held_out_geotiff(png: Path, out: Path) -> None:
    """The held-out PNG as a GeoTIFF at 0.1 m (predict reads GeoTIFFs)."""
    import numpy as np
    import rasterio
    import rasterio.errors
    from rasterio.transform import from_origin

    with warnings.catch_warnings():  # a PNG has no georeference: that is why this is written
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(png) as src:
            pixels = src.read()
    profile = {
        "driver": "GTiff",
        "width": pixels.shape[2],
        "height": pixels.shape[1],
        "count": pixels.shape[0],
        "dtype": np.uint8,
        "crs": "EPSG:32612",
        "transform": from_origin(*HELD_OUT_CORNER, GSD, GSD),
    }
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(pixels.astype(np.uint8))


def export_gsd(args: argparse.Namespace) -> float:
    """The GSD at the geometric centre of the training scales: the resolution the model saw.

    The checkpoint records the images' native GSD (0.1 m); a recipe that trains on crops
    enlarged 1.6-2.5x saw 0.04-0.0625 m, so it runs best with predict resampling to 0.05 m.
    """
    low, high = args.scale_range
    return GSD / (low * high) ** 0.5


def train_command(args: argparse.Namespace, chips: Path, save: Path, recipe: str) -> list[str]:
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "--train_image_dir", str(chips / "train"),
        "--train_label_file", str(chips / "train.json"),
        "--input_size", str(args.input_size),
        "--scale_range", str(args.scale_range[0]), str(args.scale_range[1]),
        "--batch_size", str(args.batch_size),
        "--learning_rate", str(args.learning_rate),
        "--num_epochs", str(args.epochs),
        "--warmup_steps", str(args.warmup_steps),
        "--weight_decay", "0.05",
        "--anchor_sizes", *map(str, args.anchor_sizes),
        "--photometric", str(args.photometric),
        "--band_gain", str(args.band_gain),
        "--override", f"nms_thresh={args.nms}",
        "--override", f"roi_batch_per_image={args.roi_batch}",
        "--device", "cpu",
        "--num_workers", "0",
        "--seed", str(args.seed),
        "--ema", str(args.ema),
        "--save_every", "0",
        "--log_every", "10",
        "--save_checkpoint_path", str(save),
    ]  # fmt: skip
    for override in args.override:
        cmd += ["--override", override]
    if recipe == "init_from":
        return cmd + ["--init_from", str(args.init_from)]
    return cmd + ["--model", "vit_tiny_patch16"]


def held_out_row(args: argparse.Namespace, ckpt: Path, out: Path, scene: Path, truth: Path) -> dict:
    """Export `ckpt` at each test scale, predict the held-out scene with them all (one model: as it
    is; several: predict's ensemble), score it: the row's figures and seconds. With several scales
    the middle one alone is scored too (`AP50_one_scale`)."""
    middle = export_gsd(args)
    models, other = [], 0.0
    for factor in args.test_scales:
        model = out / ("model.onnx" if factor == 1 else f"model_x{factor:g}.onnx")
        other += run(
            cli("export", str(ckpt), "-o", str(model), "--gsd", f"{middle * factor:.6g}",
                "--refine-boxes", str(args.refine_boxes),
                *([] if args.score_threshold is None else
                  ["--score-threshold", str(args.score_threshold)]),
                *([] if args.validate else ["--no-validate"])),
            out / "export.log", args.threads,
        )  # fmt: skip
        models.append(model)

    def predict(chosen: list[Path], dets: Path) -> float:
        picks = [a for m in chosen for a in ("--model", str(m))]
        return run(
            cli("predict", str(scene), *picks, "-o", str(dets), "--threads", str(args.threads),
                "--overlap", str(args.predict_overlap), "--overwrite", "--tta", args.tta,
                "--tta-iou", str(args.tta_iou), "--ensemble-iou", str(args.ensemble_iou)),
            out / "predict.log", args.threads,
        )  # fmt: skip

    dets = out / "detections"
    other += predict(models, dets)
    one_scale = None
    if len(models) > 1:
        alone = out / "detections_one_scale"
        other += predict([out / "model.onnx"], alone)
        path = out / "metrics_one_scale.json"
        other += run(
            cli("score", str(alone / f"{HELD_OUT}.geojson"), "--truth", str(truth), "-o",
                str(path)),
            out / "score.log", args.threads,
        )  # fmt: skip
        one_scale = json.loads(path.read_text())["AP50"]
    # export's default tile is the training input size, in pixels at the export GSD; score
    # counts seam duplicates on the scene's own pixel grid
    tile = round(args.input_size * middle / GSD)
    metrics_path = out / "metrics.json"
    other += run(
        cli("score", str(dets / f"{HELD_OUT}.geojson"), "--truth", str(truth), "-o",
            str(metrics_path), "--tile", str(tile), "--overlap",
            str(args.predict_overlap)),
        out / "score.log", args.threads,
    )  # fmt: skip
    # DeepForest scores crowns at IoU 0.4 (evaluate_boxes' iou_threshold default, in
    # weecology/DeepForest src/deepforest/evaluate.py); score's --iou moves the threshold of
    # its all-point (xView) AP, not COCO's AP50
    loose_path = out / "metrics_iou0.4.json"
    other += run(
        cli("score", str(dets / f"{HELD_OUT}.geojson"), "--truth", str(truth), "-o",
            str(loose_path), "--iou", "0.4"),
        out / "score.log", args.threads,
    )  # fmt: skip
    metrics = json.loads(metrics_path.read_text())
    loose = json.loads(loose_path.read_text())
    found = json.loads((dets / f"{HELD_OUT}.geojson").read_text())
    return {
        "AP50": metrics["AP50"],
        "AP": metrics["AP"],
        "AP_iou40": loose["xview_mAP"],
        "detections": len(found["features"]),
        "duplicates": metrics.get("duplicates"),
        "seam_duplicates": metrics.get("seam_duplicates"),
        "AP50_one_scale": one_scale,
        "seconds": other,
    }


def weights_not_averaged(ckpt: Path, out: Path) -> None:
    """A copy of a `--ema` checkpoint whose model is the weights as trained (engine/ema.py
    rule 3)."""
    import torch

    from scalemae_det.models.weights import read_checkpoint

    state = read_checkpoint(ckpt)
    state["model"] = state["train"]["weights"]
    torch.save(state, out)


def bench(args: argparse.Namespace) -> list[dict]:
    real = args.shared / "realimagery"
    if not (real / f"{TRAIN_SCENE}.xml").is_file():
        sys.exit(f"{real}: the real crops are not there (see --shared)")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    chips, truth_dir = work / "chips", work / "truth"
    common = ["--gsd", str(GSD), "--chip", str(args.chip), "--overlap", str(args.chip_overlap)]
    prep = run(
        cli("prepare", "--images", str(real / f"{TRAIN_SCENE}.png"), "--labels",
            str(real / f"{TRAIN_SCENE}.xml"), "-o", str(chips), "--val-fraction", "0", *common),
        log, args.threads,
    )  # fmt: skip
    run(
        cli("prepare", "--images", str(real / f"{HELD_OUT}.png"), "--labels",
            str(real / f"{HELD_OUT}.xml"), "-o", str(truth_dir), "--val-fraction", "0", *common),
        log, args.threads,
    )  # fmt: skip
    truth = truth_dir / "train_scenes.json"  # its scene-pixel boxes; val cannot be 1
    scene = work / f"{HELD_OUT}.tif"
    held_out_geotiff(real / f"{HELD_OUT}.png", scene)

    # training is the long part: the recipes train side by side, one thread each
    jobs = {}
    for recipe in args.recipes:
        out = work / recipe
        out.mkdir(exist_ok=True)
        if args.reuse and (out / "checkpoint.pth").is_file():
            continue  # trained by an earlier run of this bench; its log gives the minutes
        cmd = train_command(args, chips, out / "checkpoint.pth", recipe)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
        with (out / "train.log").open("w") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
        fh = (out / "train.log").open("a")
        jobs[recipe] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=fh),
                        time.perf_counter(), fh)  # fmt: skip
        if not args.parallel:
            jobs[recipe][0].wait()
    for recipe, (proc, _start, fh) in jobs.items():
        if proc.wait():
            sys.exit(
                f"train.py ({recipe}) failed:\n{(work / recipe / 'train.log').read_text()[-3000:]}"
            )
        fh.close()
    trained = {}
    for recipe in args.recipes:
        log_rows = (work / recipe / "train_log.jsonl").read_text().splitlines()
        times = [json.loads(r)["time"] for r in log_rows]
        trained[recipe] = times[-1] - times[0]  # first to last log record: training itself

    rows = []
    for recipe in args.recipes:
        out = work / recipe
        label = recipe if args.tta == "none" else f"{recipe}, --tta {args.tta}"
        if len(args.test_scales) > 1:
            label += f", {len(args.test_scales)} scales"
        if args.refine_boxes:
            label += f", --refine-boxes {args.refine_boxes}"
        runs = [(out / "checkpoint.pth", out, label)]
        if args.ema:  # the same run's weights before averaging: a comparison on one trajectory
            plain = out / "weights_not_averaged"
            plain.mkdir(exist_ok=True)
            weights_not_averaged(out / "checkpoint.pth", plain / "checkpoint.pth")
            runs.append((plain / "checkpoint.pth", plain, f"{label}, weights not averaged"))
        for ckpt, folder, name in runs:
            row = held_out_row(args, ckpt, folder, scene, truth)
            seconds = row.pop("seconds")
            rows.append(
                {
                    "recipe": name,
                    **row,
                    "train_min": trained[recipe] / 60,
                    "total_min": (prep + trained[recipe] + seconds) / 60,
                }
            )
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    head = (
        "| recipe | held-out AP50 | AP50 at one scale | COCO AP | AP at IoU 0.4 | detections "
        "| duplicates (seams) | train min | total min |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['recipe']} | {r['AP50']:.3f} | "
        f"{'-' if r['AP50_one_scale'] is None else format(r['AP50_one_scale'], '.3f')} | "
        f"{r['AP']:.3f} | {r['AP_iou40']:.3f} | "
        f"{r['detections']} | "
        f"{r['duplicates']} ({r['seam_duplicates']}) | {r['train_min']:.1f} | "
        f"{r['total_min']:.1f} |\n"
        for r in rows
    )
    return head + body


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="holds realimagery/")
    p.add_argument("--work", type=Path, default=Path("/tmp/scalemae-det-bench-real"))
    p.add_argument("--recipes", type=lambda s: s.split(","), default=list(RECIPES))
    p.add_argument("--init_from", type=Path, default=BUNDLED, help="detector for init_from")
    p.add_argument("--chip", type=int, default=512, help="prepare's chip side, px")
    p.add_argument("--chip_overlap", type=float, default=0.25)
    p.add_argument("--input_size", type=int, default=384, help="training crop, px")
    p.add_argument("--scale_range", type=float, nargs=2, default=(1.6, 2.5),
                   help="train.py's; export runs at the GSD in their middle")  # fmt: skip
    p.add_argument("--anchor_sizes", type=int, nargs=5, default=(16, 32, 64, 128, 256),
                   help="px at the training scales: 10-95 px crowns enlarged 1.6-2.5x")  # fmt: skip
    p.add_argument("--predict_overlap", type=float, default=0.5,
                   help="predict's tile overlap (a 19 m tile cuts many crowns)")  # fmt: skip
    p.add_argument("--tta", default="flip4", choices=VIEWS,
                   help="predict --tta: test-time views, fused per tile")  # fmt: skip
    p.add_argument("--tta_iou", type=float, default=0.4,
                   help="predict --tta-iou (default 0.55; 0.4 suits touching crowns)")  # fmt: skip
    p.add_argument("--test_scales", type=float, nargs="+", default=(0.84, 0.9, 1.0, 1.12),
                   help="GSDs predict runs at, as factors of the training scales' middle; "
                   "several: one export each, fused (predict --model ... --ensemble-iou)",
                   )  # fmt: skip
    p.add_argument("--ensemble_iou", type=float, default=0.55,
                   help="predict --ensemble-iou, over which the scales' boxes fuse")  # fmt: skip
    p.add_argument("--refine_boxes", type=int, default=2,
                   help="export --refine-boxes: more box-head passes on its boxes")  # fmt: skip
    p.add_argument("--score_threshold", type=float, default=None,
                   help="export --score-threshold (default: the model's, 0.05)")  # fmt: skip
    p.add_argument("--photometric", type=float, default=0.1, help="train.py --photometric")
    p.add_argument("--band_gain", type=float, default=0.0, help="train.py --band_gain")
    p.add_argument("--nms", type=float, default=0.4, help="the model's NMS IoU threshold")
    p.add_argument("--roi_batch", type=int, default=256,
                   help="box-head RoIs sampled per image (model default 512)")  # fmt: skip
    p.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                   help="more train.py --override (model config fields); repeatable")  # fmt: skip
    p.add_argument("--epochs", type=int, default=250, help="of 10 steps (42 chips, batch 4)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--learning_rate", type=float, default=4e-4)
    p.add_argument("--warmup_steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="train.py --seed")
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="train.py --ema; when on, the weights not averaged are scored too",
    )
    p.add_argument("--reuse", action="store_true", help="keep checkpoints --work already has")
    p.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                   help="export's parity check")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="CPU threads per command")
    p.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=True,
                   help="train the recipes side by side")  # fmt: skip
    args = p.parse_args(argv)
    unknown = set(args.recipes) - set(RECIPES)
    if unknown:
        p.error(
            f"--recipes: unknown {', '.join(sorted(unknown))}; choose from {', '.join(RECIPES)}"
        )
    scales = args.test_scales
    if 1 not in scales or min(scales) <= 0 or len(set(scales)) < len(scales):
        p.error(f"--test_scales: needs 1 and distinct positive factors, got {list(scales)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = bench(args)
    text = table(rows, args)
    print(text, end="")
    (args.work / "bench_real.md").write_text(text)
    (args.work / "bench_real.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
