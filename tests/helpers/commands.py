"""Running commands in-process as the bad-input table and the fault tests do, in a shared world.

    build_world(root, tiny_checkpoint)  the inputs the command lines name: scenes with squares
                                        and the ONNX stand-in, the tiny checkpoint and broken
                                        variants of it, a small COCO dataset, xView scenes with
                                        one truncated
    make_place(tmp_path, monkeypatch)   a case's own paths: {out} (not there yet), {file}, {dir},
                                        {ro} (refused by os.access), {missing}, {tmp}
    values(world, place)                both as strings, for the placeholders of a command line
    run(line, values, monkeypatch, capsys) -> (exit code, stdout, stderr): `scalemae_det.cli.main`
                                        or train.py's entry (a line starting "train.py")
    nothing / no_export(place, world)   assertions on what a failed command left behind

tests/conftest.py's `world` (per session) and `place` fixtures call the builders.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from helpers.training import make_dataset
from scalemae_det.cli import main, report_user_errors
from scalemae_det.engine.options import train_flag
from scalemae_det.engine.run import main as train_main
from scalemae_det.models.weights import read_checkpoint
from scalemae_det.runtime import records
from scalemae_det.synthetic.standin import build_model, metadata, scene_with_squares

PREDICT = "predict {scene} --model {model} --out {out}"
EXPORT = "export {ckpt} --out {tmp}/m.onnx --tile 64 --batch 1 --no-simplify"
EVALUATE = (
    "evaluate --checkpoint {ckpt} --image-dir {images} --label-file {eval_labels} "
    "--device cpu --num-workers 0"
)
XVIEW = "prepare-xview --geojson {xview_good} --images {xview_images} --out {out} --chip 128"
TRAIN = "train.py {train}"
DEMO = "demo --out {out} --size 256 --tile 64"


def _checkpoint_variant(src: Path, dst: Path, change: Callable[[dict], None]) -> Path:
    ckpt = read_checkpoint(src)
    change(ckpt)
    torch.save(ckpt, dst)
    return dst


def _nan_weights(ckpt: dict) -> None:
    ckpt["model"]["backbone.trunk.blocks.0.attn.qkv.weight"] = torch.full_like(
        ckpt["model"]["backbone.trunk.blocks.0.attn.qkv.weight"], float("nan")
    )


def _other_width(ckpt: dict) -> None:
    ckpt["config"] = {**ckpt["config"], "embed_dim": 96, "num_heads": 2}


def _never_detects(ckpt: dict) -> None:
    """Finite weights whose class scores underflow to 0 for every object class: no detection at any
    threshold."""
    bias = ckpt["model"]["roi_heads.box_predictor.cls_score.bias"]
    bias[1:] = -1e4
    bias[0] = 1e4


def _xview(root: Path) -> dict:
    """Three small scenes and their xView-format labels; `bad.tif` is labelled but truncated
    (unreadable)."""
    images = root / "images"
    images.mkdir()
    features = []
    for k, name in enumerate(["1.tif", "2.tif", "3.tif", "bad.tif"]):
        profile = dict(
            driver="GTiff",
            width=300,
            height=200,
            count=3,
            dtype="uint8",
            crs="EPSG:4326",
            transform=from_origin(10 + k, 40, 2.7e-6, 2.7e-6),
        )
        with rasterio.open(images / name, "w", **profile) as dst:
            dst.write(np.random.default_rng(k).integers(1, 255, (3, 200, 300), dtype=np.uint8))
        for box in ([10, 10, 40, 40], [150, 100, 190, 130]):
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "image_id": name,
                        "type_id": 18,
                        "bounds_imcoords": ",".join(map(str, box)),
                    },
                }
            )
    bad = images / "bad.tif"
    bad.write_bytes(bad.read_bytes()[:4000])
    good_only = root / "good.geojson"
    good_only.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [f for f in features if f["properties"]["image_id"] != "bad.tif"],
            }
        )
    )
    everything = root / "all.geojson"
    everything.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return {"xview_images": images, "xview_good": good_only, "xview_all": everything}


def build_world(root: Path, tiny_checkpoint: Path) -> dict:
    """The inputs every command line may name (see the module doc), built under `root`."""
    scenes = root / "scenes"
    scenes.mkdir()
    w = {
        "scene": scene_with_squares(scenes / "a.tif", 150, 120, [(10, 10), (70, 40)]),
        "scene2": scene_with_squares(scenes / "b.tif", 150, 120, [(20, 30)]),
        "model": build_model(root / "standin.onnx", metadata(gsd=1.0, score_threshold=0.3)),
        "notonnx": root / "notes.onnx",
        "ckpt": tiny_checkpoint,
        "nan_ckpt": _checkpoint_variant(tiny_checkpoint, root / "nan.pt", _nan_weights),
        "misfit_ckpt": _checkpoint_variant(tiny_checkpoint, root / "misfit.pt", _other_width),
        "blind_ckpt": _checkpoint_variant(tiny_checkpoint, root / "blind.pt", _never_detects),
    }
    w["notonnx"].write_text("not a model")
    data = root / "data"
    w["images"], w["labels"] = make_dataset(data, 3)
    doc = json.loads(w["labels"].read_text())
    doc["annotations"] = []
    w["empty_labels"] = data / "no_annotations.json"
    w["empty_labels"].write_text(json.dumps(doc))
    # the tiny checkpoint's classes are vehicle/building/ship: a label file with those names for
    # evaluate
    doc = json.loads(w["labels"].read_text())
    doc["categories"] = [
        {"id": 1, "name": "vehicle"},
        {"id": 2, "name": "building"},
        {"id": 3, "name": "ship"},
    ]
    w["eval_labels"] = data / "eval.json"
    w["eval_labels"].write_text(json.dumps(doc))
    w.update(_xview(root))
    return w


def make_place(tmp_path: Path, monkeypatch) -> dict:
    """The case's own paths; {ro} is refused by os.access as root would otherwise write anywhere."""
    paths = {
        "out": tmp_path / "out",
        "file": tmp_path / "afile",
        "dir": tmp_path / "adir",
        "ro": tmp_path / "ro",
        "missing": tmp_path / "nowhere" / "x",
        "tmp": tmp_path,
    }
    paths["file"].write_text("a file")
    paths["dir"].mkdir()
    paths["ro"].mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).absolute() == paths["ro"].absolute():
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return paths


def values(world: dict, place: dict) -> dict[str, str]:
    """The placeholders of a command line: the world's paths and the case's own."""
    return {**{k: str(v) for k, v in world.items()}, **{k: str(v) for k, v in place.items()}}


def run(line: str, values: dict, monkeypatch, capsys) -> tuple[int, str, str]:
    argv = shlex.split(line.format(**values))
    try:
        if argv[0] == "train.py":
            report_user_errors(train_main, argv[1:], spell=train_flag)
        else:
            monkeypatch.setattr(sys, "argv", ["scalemae-det", *argv])
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_under(folder: Path) -> list[str]:
    """Everything under `folder` but predict's run records (runtime.records), which log failed
    scenes too."""
    found = folder.rglob("*") if folder.exists() else []
    return sorted(
        str(p.relative_to(folder))
        for p in found
        if p.relative_to(folder).parts[0] != records.FOLDER
    )


def nothing(place: dict, world: dict) -> None:
    """The output folder holds nothing (or was never made)."""
    assert files_under(place["out"]) == []


def no_export(place: dict, world: dict) -> None:
    """No model, report or work folder of m.onnx beside where it would have gone."""
    assert [p.name for p in place["tmp"].iterdir() if "m.onnx" in p.name] == []
