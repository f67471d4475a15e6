"""Bad inputs and faults across every command, as a table.

Each case runs one command line in-process (`scalemae_det.cli.main`, or train.py's entry with its
own flag spelling) and asserts: the exit status, exactly one `error:` line naming the file or the
option and the problem, no traceback, and the output folder afterwards (nothing partial, nothing
stale). The rules they hold the commands to: every value and output path is checked before any
work (NaN and infinity included); nothing is silently wrong; nothing half-written is left.

Placeholders in the command lines: {out} the case's output folder (not there beforehand), {file} an
existing file, {dir} an existing folder, {ro} a folder that is not writable (os.access says so),
{missing} a path under a folder that does not exist; the rest are built once by the `world` fixture.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from helpers.training import make_dataset, train_args
from scalemae_det.cli import main, report_user_errors
from scalemae_det.engine.options import train_flag
from scalemae_det.engine.run import main as train_main
from scalemae_det.models.weights import read_checkpoint
from scalemae_det.runtime import records
from scalemae_det.synthetic.standin import build_model, metadata, scene_with_squares

# ---------------------------------------------------------------- the world the cases run in


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


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoint) -> dict:
    root = tmp_path_factory.mktemp("world")
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


@pytest.fixture
def place(tmp_path, monkeypatch) -> dict:
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


# ---------------------------------------------------------------- the table


def no_export(place: dict, world: dict) -> None:
    """No model, report or work folder of m.onnx beside where it would have gone."""
    assert [p.name for p in place["tmp"].iterdir() if "m.onnx" in p.name] == []


def _absent(path: Path) -> None:
    assert not path.exists()


@dataclass(frozen=True)
class Case:
    line: str  # the command line, with placeholders
    words: tuple[str, ...]  # what the one error line must say (besides "error: ")
    code: int = 1
    after: Callable[[dict, dict], None] = nothing
    setup: Callable[[dict], None] | None = None


PREDICT = "predict {scene} --model {model} --out {out}"
EXPORT = "export {ckpt} --out {tmp}/m.onnx --tile 64 --batch 1 --no-simplify"
EVALUATE = (
    "evaluate --checkpoint {ckpt} --image-dir {images} --label-file {eval_labels} "
    "--device cpu --num-workers 0"
)
XVIEW = "prepare-xview --geojson {xview_good} --images {xview_images} --out {out} --chip 128"
TRAIN = "train.py {train}"
DEMO = "demo --out {out} --size 256 --tile 64"

CASES = {
    # predict: ranges, NaN, choices, bands (rule 1, 6)
    "predict score 2": Case(
        f"{PREDICT} --score-threshold 2", ("--score-threshold 2.0", "must be in [0, 1]")
    ),
    "predict score nan": Case(
        f"{PREDICT} --score-threshold nan", ("--score-threshold nan", "not a finite number")
    ),
    "predict score negative": Case(
        f"{PREDICT} --score-threshold -0.1", ("--score-threshold -0.1", "[0, 1]")
    ),
    "predict score below the graph's": Case(
        f"{PREDICT} --score-threshold 0.1",
        (
            "--score-threshold 0.1",
            "below the threshold exported into standin.onnx (0.3)",
            "re-export",
            "--score-threshold 0.1",
        ),
    ),
    "predict overlap 1": Case(f"{PREDICT} --overlap 1", ("--overlap 1.0", "[0, 1)")),
    "predict overlap nan": Case(
        f"{PREDICT} --overlap nan", ("--overlap nan", "not a finite number")
    ),
    "predict batch 0": Case(f"{PREDICT} --batch 0", ("--batch 0", "at least 1")),
    "predict threads 0": Case(f"{PREDICT} --threads 0", ("--threads 0", "at least 1")),
    "predict bands 0": Case(f"{PREDICT} --bands 0", ("--bands 0", "band numbers start at 1")),
    "predict bands 3,0,1": Case(f"{PREDICT} --bands 3,0,1", ("--bands 3,0,1", "start at 1")),
    "predict two bands": Case(f"{PREDICT} --bands 1,2", ("--bands 1,2", "1 or 3 band numbers")),
    "predict bands words": Case(
        f"{PREDICT} --bands red", ("--bands red", "comma-separated band numbers")
    ),
    "predict band past the raster": Case(
        f"{PREDICT} --bands 5", ("a.tif", "--bands 5", "raster has 3 band(s)")
    ),
    "predict scale reversed": Case(f"{PREDICT} --scale 5,1", ("--scale 5,1", "MIN < MAX")),
    "predict scale nan": Case(f"{PREDICT} --scale nan,1", ("--scale nan,1", "finite")),
    "predict scale word": Case(f"{PREDICT} --scale high", ("--scale high", "auto or MIN,MAX")),
    "predict format": Case(f"{PREDICT} --format xml", ("--format xml", "geojson, coco, csv")),
    "predict crs": Case(f"{PREDICT} --crs utm", ("--crs utm", "wgs84, native")),
    "predict match": Case(f"{PREDICT} --match dice", ("--match dice", "iou, ios")),
    "predict provider": Case(
        f"{PREDICT} --provider gpu", ("--provider gpu", "auto, tensorrt, cuda, cpu")
    ),
    "predict gsd mode": Case(
        f"{PREDICT} --gsd-mode stretch", ("--gsd-mode stretch", "resample, as-is")
    ),
    # predict: outputs and inputs
    "predict out is a file": Case(
        "predict {scene} --model {model} --out {file}",
        ("--out", "afile", "is a file, not a folder"),
    ),
    "predict out under a file": Case(
        "predict {scene} --model {model} --out {file}/sub",
        ("--out", "afile is a file, not a folder"),
    ),
    "predict out unwritable": Case(
        "predict {scene} --model {model} --out {ro}", ("--out", "ro", "not writable")
    ),
    "predict preview folder missing": Case(
        f"{PREDICT} --preview {{missing}}.png", ("--preview", "nowhere", "does not exist")
    ),
    "predict preview is a folder": Case(
        f"{PREDICT} --preview {{dir}}", ("--preview", "adir", "is a folder")
    ),
    "predict preview unwritable": Case(
        f"{PREDICT} --preview {{ro}}/p.png", ("--preview", "not writable")
    ),
    "predict model missing": Case(
        "predict {scene} --model {tmp}/none.onnx --out {out}", ("none.onnx", "model file not found")
    ),
    "predict model not onnx": Case(
        "predict {scene} --model {notonnx} --out {out}", ("notes.onnx", "not a loadable ONNX model")
    ),
    "predict scene missing": Case(
        "predict {tmp}/gone.tif --model {model} --out {out}", ("gone.tif", "no such file")
    ),
    "predict scene not a raster": Case(
        "predict {file} --model {model} --out {out}", ("afile", "not a readable raster")
    ),
    # export (rule 1, 2, 3)
    "export gsd inf": Case(
        f"{EXPORT} --gsd inf", ("--gsd inf", "not a finite number"), after=no_export
    ),
    "export gsd nan": Case(
        f"{EXPORT} --gsd nan", ("--gsd nan", "not a finite number"), after=no_export
    ),
    "export gsd 0": Case(f"{EXPORT} --gsd 0", ("--gsd 0.0", "must be positive"), after=no_export),
    "export gsd negative": Case(
        f"{EXPORT} --gsd -0.5", ("--gsd -0.5", "must be positive"), after=no_export
    ),
    "export opset 9": Case(
        f"{EXPORT} --opset 9", ("--opset 9", "supported opsets are 14 to 20"), after=no_export
    ),
    "export opset 30": Case(f"{EXPORT} --opset 30", ("--opset 30", "14 to 20"), after=no_export),
    "export tile 100": Case(
        f"{EXPORT} --tile 100", ("--tile 100", "multiple of 32"), after=no_export
    ),
    "export tile 0": Case(f"{EXPORT} --tile 0", ("--tile 0", "at least 32"), after=no_export),
    "export batch 0": Case(f"{EXPORT} --batch 0", ("--batch 0", "at least 1"), after=no_export),
    "export max detections 0": Case(
        f"{EXPORT} --max-detections 0", ("--max-detections 0", "at least 1"), after=no_export
    ),
    "export score 1": Case(
        f"{EXPORT} --score-threshold 1", ("--score-threshold 1.0", "[0, 1)"), after=no_export
    ),
    "export score nan": Case(
        f"{EXPORT} --score-threshold nan", ("--score-threshold nan", "finite"), after=no_export
    ),
    "export format": Case(
        f"{EXPORT} --format tflite", ("--format tflite", "onnx, torchscript, deepness, all"), after=no_export
    ),
    "export out is a folder": Case(
        "export {ckpt} --out {dir}",
        ("--out", "adir", "is a folder; give a file name"),
        after=no_export,
    ),
    "export out folder missing": Case(
        "export {ckpt} --out {missing}.onnx",
        ("--out", "nowhere", "does not exist"),
        after=no_export,
    ),
    "export out under a file": Case(
        "export {ckpt} --out {file}/m.onnx",
        ("--out", "afile is a file, not a folder"),
        after=no_export,
    ),
    "export out unwritable": Case(
        "export {ckpt} --out {ro}/m.onnx", ("--out", "ro", "not writable"), after=no_export
    ),
    "export report path is a folder": Case(
        "export {ckpt} --out {tmp}/m.onnx",
        ("m.onnx.parity.json", "is a folder"),
        setup=lambda p: (p["tmp"] / "m.onnx.parity.json").mkdir(),
        after=lambda p, w: _absent(p["tmp"] / "m.onnx"),
    ),
    "export checkpoint missing": Case(
        "export {tmp}/none.pt --out {tmp}/m.onnx",
        ("none.pt", "no such checkpoint file"),
        after=no_export,
    ),
    "export checkpoint NaN": Case(
        "export {nan_ckpt} --out {tmp}/m.onnx",
        ("nan.pt", "NaN or infinite", "qkv.weight"),
        after=no_export,
    ),
    "export checkpoint misfit": Case(
        "export {misfit_ckpt} --out {tmp}/m.onnx",
        ("misfit.pt", "weights do not fit", "embed_dim 96", "shapes differ", "expected"),
        after=no_export,
    ),
    "export checkpoint not torch": Case(
        "export {file} --out {tmp}/m.onnx",
        ("afile", "not a readable PyTorch checkpoint"),
        after=no_export,
    ),
    "export detects nothing": Case(
        f"{EXPORT.replace('{ckpt}', '{blind_ckpt}')}",
        ("m.onnx", "parity FAILED", "nothing to compare", "nothing written"),
        after=no_export,
    ),
    # evaluate (rule 1, 6)
    "evaluate output folder missing": Case(
        f"{EVALUATE} -o {{missing}}.json", ("--out", "nowhere", "does not exist")
    ),
    "evaluate output is a folder": Case(f"{EVALUATE} -o {{dir}}", ("--out", "adir", "is a folder")),
    "evaluate output unwritable": Case(f"{EVALUATE} -o {{ro}}/m.json", ("--out", "not writable")),
    "evaluate detections folder missing": Case(
        f"{EVALUATE} -o {{out}}.json --detections {{missing}}.json",
        ("--detections", "nowhere", "does not exist"),
    ),
    "evaluate bands 0": Case(f"{EVALUATE} --bands 0", ("--bands 0", "band numbers start at 1")),
    "evaluate bands two": Case(f"{EVALUATE} --bands 1,2", ("--bands 1,2", "1 or 3")),
    "evaluate amp": Case(f"{EVALUATE} --amp fp8", ("--amp fp8", "auto, bf16, fp16, off")),
    "evaluate batch 0": Case(f"{EVALUATE} --batch-size 0", ("--batch-size 0", "at least 1")),
    "evaluate input size 0": Case(f"{EVALUATE} --input-size 0", ("--input-size 0", "at least 32")),
    "evaluate workers negative": Case(
        f"{EVALUATE} --num-workers -1", ("--num-workers -1", "at least 0")
    ),
    "evaluate checkpoint NaN": Case(
        "evaluate --checkpoint {nan_ckpt} --image-dir {images} --label-file {eval_labels} "
        "--device cpu -o {tmp}/m.json",
        ("nan.pt", "NaN or infinite"),
        after=lambda p, w: _absent(p["tmp"] / "m.json"),
    ),
    # prepare-xview (rule 1, 4)
    "xview out is a file": Case(
        "prepare-xview --geojson {xview_good} --images {xview_images} --out {file}",
        ("--out", "afile", "is a file, not a folder"),
    ),
    "xview val fraction 1": Case(f"{XVIEW} --val-fraction 1", ("--val-fraction 1.0", "[0, 1)")),
    "xview val fraction nan": Case(f"{XVIEW} --val-fraction nan", ("--val-fraction nan", "finite")),
    "xview chip 0": Case(f"{XVIEW} --chip 0", ("--chip 0", "at least 1")),
    "xview overlap 1": Case(f"{XVIEW} --overlap 1", ("--overlap 1.0", "[0, 1)")),
    "xview min visible 0": Case(f"{XVIEW} --min-visible 0", ("--min-visible 0.0", "(0, 1]")),
    "xview drop classes": Case(
        f"{XVIEW} --drop-classes a,b", ("--drop-classes", "comma-separated integers")
    ),
    "xview unreadable scene": Case(
        "prepare-xview --geojson {xview_all} --images {xview_images} --out {out} --chip 128",
        ("bad.tif", "reading failed", "--skip-unreadable"),
    ),
    # synth-scene, synth-chips
    "synth scene size": Case("synth-scene --out {out}.tif --size 10", ("--size 10", "at least 64")),
    "synth scene gsd inf": Case(
        "synth-scene --out {out}.tif --size 64 --gsd inf", ("--gsd inf", "finite")
    ),
    "synth scene gsd nan": Case(
        "synth-scene --out {out}.tif --size 64 --gsd nan", ("--gsd nan", "finite")
    ),
    "synth scene out is a folder": Case(
        "synth-scene --out {dir} --size 64", ("--out", "adir", "is a folder")
    ),
    "synth scene out folder missing": Case(
        "synth-scene --out {missing}.tif --size 64", ("--out", "does not exist")
    ),
    "synth scene geographic crs": Case(
        "synth-scene --out {out}.tif --size 64 --crs EPSG:4326", ("not projected in metres",)
    ),
    "synth chips count 0": Case("synth-chips --out {out} --count 0", ("--count 0", "at least 1")),
    "synth chips gsd range": Case(
        "synth-chips --out {out} --count 2 --gsd 0.5 --gsd-max 0.1",
        ("--gsd-max 0.1", "at least 0.5"),
    ),
    "synth chips out is a file": Case(
        "synth-chips --out {file} --count 2", ("--out", "afile", "is a file, not a folder")
    ),
    # demo
    "demo size": Case("demo --out {out} --size 100", ("--size 100", "at least 256")),
    "demo tile": Case("demo --out {out} --tile 100", ("--tile 100", "multiple of 32")),
    "demo out is a file": Case("demo --out {file}", ("--out", "afile", "is a file, not a folder")),
    "demo checkpoint missing": Case(
        "demo --out {out} --checkpoint {tmp}/none.pth", ("--checkpoint", "none.pth", "no such")
    ),
    # train.py (rule 1, 2, 3, 6): flags spelled with underscores
    "train lr nan": Case(
        f"{TRAIN} --learning_rate nan", ("--learning_rate nan", "not a finite number")
    ),
    "train lr inf": Case(
        f"{TRAIN} --learning_rate inf", ("--learning_rate inf", "not a finite number")
    ),
    "train gsd inf": Case(f"{TRAIN} --gsd inf", ("--gsd inf", "finite")),
    "train clip nan": Case(f"{TRAIN} --clip_grad nan", ("--clip_grad nan", "finite")),
    "train weight decay inf": Case(f"{TRAIN} --weight_decay inf", ("--weight_decay inf", "finite")),
    "train layer decay 2": Case(f"{TRAIN} --layer_decay 2", ("--layer_decay 2.0", "(0, 1]")),
    "train scale range 0": Case(f"{TRAIN} --scale_range 0 1", ("--scale_range 0.0", "positive")),
    "train scale range reversed": Case(
        f"{TRAIN} --scale_range 2 1", ("--scale_range 1.0", "at least 2.0")
    ),
    "train bands 0": Case(f"{TRAIN} --bands 0", ("--bands 0", "band numbers start at 1")),
    "train bands spaced": Case(f"{TRAIN} --bands 3 2 1", ("unrecognized arguments: 2 1",)),
    "train bands comma": Case(f"{TRAIN} --bands 3,2", ("--bands 3,2", "1 or 3")),
    "train schedule": Case(f"{TRAIN} --schedule linear", ("--schedule linear", "cosine, step")),
    "train epochs 0": Case(f"{TRAIN} --num_epochs 0", ("--num_epochs 0", "at least 1")),
    "train save path is a folder": Case(
        "train.py {train} --save_checkpoint_path {dir}",
        ("--save_checkpoint_path", "adir", "is a folder"),
    ),
    "train save path under a file": Case(
        "train.py {train} --save_checkpoint_path {file}/c.pth",
        ("--save_checkpoint_path", "afile is a file, not a folder"),
    ),
    "train save path unwritable": Case(
        "train.py {train} --save_checkpoint_path {ro}/c.pth",
        ("--save_checkpoint_path", "not writable"),
    ),
    "train no annotations": Case(
        "train.py {train_empty}",
        ("no_annotations.json", "not one usable annotation", "nothing to learn from"),
    ),
    "train diverges": Case(
        f"{TRAIN} --learning_rate 1e30 --warmup_steps 0 --num_epochs 2",
        ("--learning_rate 1e+30", "training diverged", "step", "--clip_grad"),
        after=lambda p, w: _absent(p["out"] / "c.pth"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, world, place, monkeypatch, capsys):
    case = CASES[name]
    values = {**{k: str(v) for k, v in world.items()}, **{k: str(v) for k, v in place.items()}}
    values["train"] = shlex.join(
        train_args(world["images"], world["labels"], place["out"] / "c.pth", "--num_epochs", "1")
    )
    values["train_empty"] = shlex.join(
        train_args(world["images"], world["empty_labels"], place["out"] / "c.pth")
    )
    if case.setup:
        case.setup(place)
    code, _, err = run(case.line, values, monkeypatch, capsys)
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == case.code and len(errors) == 1, err
    assert all(w in errors[0] for w in case.words), errors[0]
    case.after(place, world)


# ---------------------------------------------------------------- faults: what is left behind


def test_interrupted_export_leaves_nothing_and_a_dead_writers_work_folder_goes(
    world, place, monkeypatch, capsys
):
    """Ctrl-C during tracing: exit 130, one line, no model and no work folder; a work folder that an
    export killed
    with SIGKILL left (its process is gone) is removed by the next export of the same output, not
    others'."""
    import scalemae_det.export.onnx_export as onnx_export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    values = {**{k: str(v) for k, v in world.items()}, **{k: str(v) for k, v in place.items()}}
    with monkeypatch.context() as m:
        m.setattr(onnx_export, "trace_to_onnx", interrupted)
        code, _, err = run(EXPORT, values, monkeypatch, capsys)
    assert (code, err.strip()) == (130, "error: interrupted")
    no_export(place, world)

    dead = 2**22 + 12345  # above the kernel's default pid_max, so no live process has it
    stale, other = place["tmp"] / f".m.onnx.work{dead}", place["tmp"] / f".other.onnx.work{dead}"
    for folder in (stale, other):
        folder.mkdir()
        (folder / "raw.onnx").write_bytes(b"half an export")
    code, _, err = run(f"{EXPORT} --no-validate", values, monkeypatch, capsys)
    assert code == 0, err
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in place["tmp"].iterdir() if "m.onnx" in p.name) == ["m.onnx"]


def test_predict_write_failure_is_one_line_and_leaves_no_partial_file(
    world, place, monkeypatch, capsys
):
    import scalemae_det.runtime.outputs as outputs

    def disk_full(result, path, *args):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(outputs, "write", disk_full)
    values = {**{k: str(v) for k, v in world.items()}, **{k: str(v) for k, v in place.items()}}
    code, _, err = run(PREDICT, values, monkeypatch, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err
    assert "a.geojson" in errors[0] and "No space left on device" in errors[0]
    nothing(place, world)


def test_prepare_xview_skips_unreadable_scenes_and_a_rerun_keeps_no_chip_of_the_other_split(
    world, place, monkeypatch, capsys
):
    values = {**{k: str(v) for k, v in world.items()}, **{k: str(v) for k, v in place.items()}}
    xview = (
        "prepare-xview --geojson {xview_all} --images {xview_images} --out {out} "
        "--chip 128 --seed 3"
    )
    code, out, err = run(f"{xview} --val-fraction 0 --skip-unreadable", values, monkeypatch, capsys)
    assert code == 0, err
    assert "1 unreadable scene(s) skipped" in out
    train = json.loads((place["out"] / "train.json").read_text())
    assert {i["scene"] for i in train["images"]} == {"1.tif", "2.tif", "3.tif"}
    assert not [p for p in place["out"].iterdir() if p.name.startswith(".")]  # no work folder left

    code, _, err = run(f"{xview} --val-fraction 0.5 --skip-unreadable", values, monkeypatch, capsys)
    assert code == 0, err
    for split in ("train", "val"):
        records = json.loads((place["out"] / f"{split}.json").read_text())["images"]
        on_disk = sorted(p.name for p in (place["out"] / split).iterdir())
        assert (
            on_disk == sorted(r["file_name"] for r in records) and on_disk
        )  # exactly this run's chips
    scenes = [
        {r["scene"] for r in json.loads((place["out"] / f"{s}.json").read_text())["images"]}
        for s in ("train", "val")
    ]
    assert not scenes[0] & scenes[1]


def test_evaluate_writes_its_default_beside_the_user_not_the_checkpoint_and_null_for_undefined(
    world, place, monkeypatch, capsys
):
    models = place["tmp"] / "package"
    models.mkdir()
    ckpt = models / "bundled.pth"
    ckpt.write_bytes(Path(world["ckpt"]).read_bytes())
    monkeypatch.chdir(place["dir"])
    values = {
        **{k: str(v) for k, v in world.items()},
        **{k: str(v) for k, v in place.items()},
        "ckpt": str(ckpt),
    }
    code, _, err = run(EVALUATE, values, monkeypatch, capsys)
    assert code == 0, err
    assert [p.name for p in models.iterdir()] == ["bundled.pth"]
    metrics = json.loads((place["dir"] / "bundled.eval.json").read_text())
    # the 64-px images hold no large object: COCOeval has no APl, which JSON says as null (not -1)
    assert metrics["APl"] is None and all(
        v is None or v >= 0 for k, v in metrics.items() if k.startswith("AP")
    )
    monkeypatch.setenv("COLUMNS", "200")  # one line per option in rich's help
    help_code, help_out, _ = run("evaluate --help", values, monkeypatch, capsys)
    assert (
        help_code == 0 and "CHECKPOINT_NAME.eval.json" in help_out and "current folder" in help_out
    )


def test_resume_runs_the_evaluation_a_kill_interrupted_and_refuses_another_architecture(
    world, place, monkeypatch, capsys
):
    import scalemae_det.engine.run as engine_run

    save = place["out"] / "c.pth"
    argv = train_args(
        world["images"],
        world["labels"],
        save,
        "--val_image_dir",
        str(world["images"]),
        "--val_label_file",
        str(world["labels"]),
        "--num_epochs",
        "1",
        "--batch_size",
        "3",
    )
    real = engine_run.evaluate_split

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(engine_run, "evaluate_split", killed)
        with pytest.raises(SystemExit) as exc:
            report_user_errors(train_main, argv, spell=train_flag)
    assert (
        exc.value.code == 130
        and capsys.readouterr().err.strip().splitlines()[-1] == "error: interrupted"
    )
    assert not save.exists() and not (place["out"] / "eval-epoch001.json").exists()
    assert engine_run.evaluate_split is real

    report_user_errors(train_main, [*argv, "--resume", "auto"], spell=train_flag)
    assert json.loads((place["out"] / "eval-epoch001.json").read_text())["num_images"] == 3
    assert [
        e["epoch"]
        for e in map(json.loads, (place["out"] / "train_log.jsonl").read_text().splitlines())
        if e["event"] == "eval"
    ] == [1]
    assert save.exists()

    capsys.readouterr()
    wider = [*argv, "--resume", str(save), "--override", "embed_dim=128"]
    with pytest.raises(SystemExit) as exc:
        report_user_errors(train_main, wider, spell=train_flag)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "c.pth: weights do not fit" in err[0]
        and "embed_dim 128" in err[0]
        and "shapes differ" in err[0]
    )


# ---------------------------------------------------------------- the library side of the same
# rules


def test_library_errors_name_the_parameter_and_each_command_spells_it():
    from scalemae_det.base import checks
    from scalemae_det.base.errors import ParameterError, dashed_flag

    with pytest.raises(ParameterError) as exc:
        checks.bands("bands", [0, 1, 2])
    assert (
        str(exc.value)
        == "bands=[0, 1, 2]: band numbers start at 1 (the first band is 1, as in GDAL)"
    )
    assert exc.value.render(dashed_flag).startswith("--bands 0,1,2: band numbers start at 1")
    assert exc.value.render(train_flag).startswith("--bands 0,1,2:")
    err = ParameterError(
        "score_threshold", "below; use `score_threshold` 0.3", value=0.1, source="m.onnx"
    )
    assert (
        err.render(dashed_flag) == "m.onnx: --score-threshold 0.1: below; use --score-threshold 0.3"
    )
    assert str(err) == "m.onnx: score_threshold=0.1: below; use score_threshold 0.3"


def test_parity_fails_on_non_finite_outputs_and_the_opset_range_is_the_exporters():
    from torch.onnx import _constants

    from scalemae_det.export.options import MAX_OPSET
    from scalemae_det.export.parity import compare
    from scalemae_det.runtime.detections import Detections

    ref = [
        Detections(np.array([[0, 0, 9, 9]], np.float32), np.array([0.9], np.float32), np.array([1]))
    ]
    assert compare(ref, ref, 0.3, 10, "float32", "test").passed
    nan = [
        Detections(
            np.array([[0, 0, np.nan, 9]], np.float32), np.array([0.9], np.float32), np.array([1])
        )
    ]
    report = compare(ref, nan, 0.3, 10, "float32", "test")
    assert not report.passed and not report.finite and "NON-FINITE" in report.summary()
    assert MAX_OPSET == _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET


def test_parity_probes_below_a_threshold_that_leaves_nothing_to_compare(
    world, place, monkeypatch, capsys
):
    """At 0.9999 the tiny model keeps (almost) nothing; the check then compares at a lower
    threshold, and passes."""
    values = {**{k: str(v) for k, v in world.items()}, **{k: str(v) for k, v in place.items()}}
    code, _, err = run(f"{EXPORT} --score-threshold 0.9999", values, monkeypatch, capsys)
    assert code == 0, err
    report = json.loads((place["tmp"] / "m.onnx.parity.json").read_text())
    assert report["passed"] and report["compared_detections"] < 10
    probe = report["probe"]
    assert (
        probe["lowered"]
        and probe["score_threshold"] < 0.9999
        and probe["compared_detections"] >= 10
    )
    assert probe["passed"] and probe["finite"]
