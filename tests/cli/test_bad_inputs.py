"""Bad inputs across every command, as one table.

Each case runs one command line in-process (`scalemae_det.cli.main`, or train.py's entry with its
own flag spelling) and asserts: the exit status, exactly one `error:` line naming the file or the
option and the problem, no traceback, and the output folder afterwards (nothing partial, nothing
stale). The rules they hold the commands to: every value and output path is checked before any
work (NaN and infinity included); nothing is silently wrong; nothing half-written is left.

Placeholders in the command lines: {out} the case's output folder (not there beforehand), {file} an
existing file, {dir} an existing folder, {ro} a folder that is not writable (os.access says so),
{missing} a path under a folder that does not exist; the rest are built once by the `world` fixture
(tests/helpers/commands.py). The faults (a kill, an interrupt, a full disk) are tested beside
what they test: tests/export/, tests/engine/, tests/runtime/, tests/data/.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.commands import (
    EVALUATE,
    EXPORT,
    PREDICT,
    TRAIN,
    XVIEW,
    no_export,
    nothing,
    run,
    values,
)
from helpers.training import train_args

# ---------------------------------------------------------------- the table


def _absent(path: Path) -> None:
    assert not path.exists()


@dataclass(frozen=True)
class Case:
    line: str  # the command line, with placeholders
    words: tuple[str, ...]  # what the one error line must say (besides "error: ")
    code: int = 1
    after: Callable[[dict, dict], None] = nothing
    setup: Callable[[dict], None] | None = None


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
    "predict tta": Case(f"{PREDICT} --tta flip3", ("--tta flip3", "none, flip2, flip4, d8")),
    "predict tta iou 1": Case(f"{PREDICT} --tta flip2 --tta-iou 1", ("--tta-iou 1", "(0, 1)")),
    "predict tta iou nan": Case(f"{PREDICT} --tta-iou nan", ("--tta-iou nan", "finite")),
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
    "export refine 4": Case(
        f"{EXPORT} --refine-boxes 4", ("--refine-boxes 4", "must be in [0, 3]"), after=no_export
    ),
    "export refine -1": Case(
        f"{EXPORT} --refine-boxes -1", ("--refine-boxes -1", "[0, 3]"), after=no_export
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
        f"{EXPORT} --format tflite",
        ("--format tflite", "onnx, torchscript, deepness, all"),
        after=no_export,
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
    "train band gain 1": Case(f"{TRAIN} --band_gain 1", ("--band_gain 1.0", "[0, 1)")),
    "train photometric negative": Case(
        f"{TRAIN} --photometric -0.1", ("--photometric -0.1", "[0, 1)")
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
    line_values = values(world, place)
    line_values["train"] = shlex.join(
        train_args(world["images"], world["labels"], place["out"] / "c.pth", "--num_epochs", "1")
    )
    line_values["train_empty"] = shlex.join(
        train_args(world["images"], world["empty_labels"], place["out"] / "c.pth")
    )
    if case.setup:
        case.setup(place)
    code, _, err = run(case.line, line_values, monkeypatch, capsys)
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == case.code and len(errors) == 1, err
    assert all(w in errors[0] for w in case.words), errors[0]
    case.after(place, world)
