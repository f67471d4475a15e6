"""`scalemae-det predict` as users run it: in a subprocess, without torch, killed, fed bad files."""

import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from helpers.cli import NO_TORCH, REPO, numbered_scenes
from helpers.realdata import ORIGINS, raster
from scalemae_det.runtime.preview import PALETTE
from scalemae_det.synthetic.standin import build_model, metadata, scene_with_squares


def predict(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH, "predict", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", NO_TORCH, "predict", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "standin.onnx")


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_predict_runs_without_torch(tmp_path, model):
    scene = scene_with_squares(tmp_path / "a.tif", 200, 150, [(10, 10), (100, 60)])
    done = predict(
        scene, "--model", model, "--out", tmp_path / "out", "--preview", tmp_path / "a.png"
    )
    assert done.returncode == 0, done.stderr
    assert "torch import attempted" not in done.stderr
    assert "CPUExecutionProvider" in done.stderr  # the provider actually used is reported
    assert "a.tif: 2 detections" in done.stderr
    doc = json.loads((tmp_path / "out" / "a.geojson").read_text())
    assert len(doc["features"]) == 2
    with rasterio.open(
        tmp_path / "a.png"
    ) as png:  # the quicklook outlines each box in its class colour
        assert (png.width, png.height) == (200, 150)
        image = png.read()
    for feature in doc["features"]:
        x1, y1, x2, y2 = (int(v) for v in feature["properties"]["pixel_bbox"])
        colour = PALETTE[feature["properties"]["class_id"] - 1]
        for x, y in ((x1, y1), (x2, (y1 + y2) // 2), ((x1 + x2) // 2, y2)):
            np.testing.assert_array_equal(image[:, y, x], colour)


def test_killed_run_leaves_only_complete_outputs_and_rerun_skips_them(tmp_path, model):
    scenes = numbered_scenes(tmp_path / "scenes", 6, 1000)
    out = tmp_path / "out"
    proc = start(scenes, "--model", model, "--out", out)
    deadline = time.monotonic() + 60
    while not list(out.glob("*.geojson")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = sorted(out.glob("*.geojson"))
    assert 1 <= len(first) < 6, "the run should have been killed part-way"
    for path in first:  # whatever was there when it died is complete
        assert json.loads(path.read_text())["type"] == "FeatureCollection"
    stamps = {p: p.stat().st_mtime_ns for p in first}
    again = predict(scenes, "--model", model, "--out", out)
    assert again.returncode == 0, again.stderr
    for path in first:
        assert (
            f"{path.stem}.tif: skipped" in again.stderr and path.stat().st_mtime_ns == stamps[path]
        )
    for k in range(6):
        assert len(json.loads((out / f"s{k}.geojson").read_text())["features"]) == k + 1
    redo = predict(scenes / "s0.tif", "--model", model, "--out", out, "--overwrite")
    assert redo.returncode == 0 and (out / "s0.geojson").stat().st_mtime_ns != stamps.get(
        out / "s0.geojson", 0
    )


@pytest.mark.parametrize("origin", ORIGINS)
def test_bad_inputs_are_one_line_each_and_the_rest_finish(tmp_path, model, origin):
    good = scene_with_squares(tmp_path / "good.tif", 120, 100, [(30, 30)])
    (tmp_path / "made").mkdir()
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    two = tmp_path / "two.tif"
    import rasterio

    with rasterio.open(two, "w", driver="GTiff", width=8, height=8, count=2, dtype="uint8") as ds:
        ds.write(np.zeros((2, 8, 8), np.uint8))
    done = predict(
        text,
        raster("corrupt.tif", origin, tmp_path / "made"),
        two,
        tmp_path / "missing.tif",
        good,
        "--model",
        model,
        "--out",
        tmp_path / "out",
        "--gsd-mode",
        "as-is",
        "--format",
        "csv",
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = _errors(done.stderr)
    assert len(errors) == 4
    for name, problem in (
        ("notes.tif", "not a readable raster"),
        ("corrupt.tif", "reading failed"),
        ("two.tif", "2 colour bands"),
        ("missing.tif", "no such file"),
    ):
        assert any(name in e and problem in e for e in errors), (name, errors)
    assert "4 of 5 inputs failed" in done.stderr
    assert (tmp_path / "out" / "good.csv").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "good.csv",
        "records",
    ]  # records: the run's log


def _bare_model(tmp_path, args):
    args[3] = build_model(tmp_path / "bare.onnx", with_metadata=False)


def _output_is_a_file(tmp_path, args):
    (tmp_path / "taken").write_text("")
    args[5] = tmp_path / "taken"


# case: (change to the arguments [scene, scene, --model, M, --out, O], words of the one error line)
UNUSABLE = {
    "no metadata": (_bare_model, "bare.onnx: not a scalemae-det model"),
    "output is a file": (_output_is_a_file, "taken: is a file, not a folder"),
    "preview name": (
        lambda tmp, args: args.extend(["--preview", tmp / "p.png"]),
        "with several scenes the name needs {scene}",
    ),
    "bad option": (
        lambda tmp, args: args.extend(["--scale", "low,high"]),
        "--scale low,high: expected auto or MIN,MAX",
    ),
    "batch 0": (lambda tmp, args: args.extend(["--batch", "0"]), "--batch 0: must be at least 1"),
    "ensemble of other classes": (
        lambda tmp, args: args.extend(
            ["--model", build_model(tmp / "ab.onnx", metadata(class_names=["a", "b"]))]
        ),
        "ab.onnx: classes ['a', 'b'], where standin.onnx has",
    ),
    "a model twice": (lambda tmp, args: args.extend(["--model", args[3]]), "given twice"),
    "ensemble IoU": (
        lambda tmp, args: args.extend(["--ensemble-iou", "0"]),
        "--ensemble-iou 0.0: must be in (0, 1)",
    ),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_unusable_model_or_options_fail_in_one_line(tmp_path, model, case):
    change, expected = UNUSABLE[case]
    scene = scene_with_squares(tmp_path / "a.tif", 100, 80, [(10, 10)])
    args = [
        scene,
        scene_with_squares(tmp_path / "b.tif", 100, 80, [(10, 10)]),
        "--model",
        model,
        "--out",
        tmp_path / "out",
    ]
    change(tmp_path, args)
    done = predict(*args)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert _errors(done.stderr) == [line for line in done.stderr.splitlines() if expected in line]
    assert len(_errors(done.stderr)) == 1
    assert not (tmp_path / "out" / "a.geojson").exists()


def test_no_gpu_means_a_cuda_request_fails(tmp_path, model):
    import onnxruntime as ort

    probe = ort.InferenceSession(
        str(model), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    if "CUDAExecutionProvider" in probe.get_providers():
        pytest.skip("a GPU is usable here: nothing to refuse")
    scene = scene_with_squares(tmp_path / "a.tif", 100, 80, [(10, 10)])
    done = predict(scene, "--model", model, "--out", tmp_path / "out", "--provider", "cuda")
    assert done.returncode == 1 and len(_errors(done.stderr)) == 1
    assert "--provider cuda: requested but CUDAExecutionProvider not usable" in done.stderr
    assert not (tmp_path / "out" / "a.geojson").exists()


def test_a_fusion_threshold_without_views_is_said_to_do_nothing(tmp_path, model):
    scene = scene_with_squares(tmp_path / "a.tif", 100, 80, [(10, 10)])

    def warnings(*extra):
        done = predict(scene, "--model", model, "-o", tmp_path / "out", "--overwrite", *extra)
        assert done.returncode == 0, done.stderr
        return [line for line in done.stderr.splitlines() if line.startswith("warning:")]

    assert warnings("--tta-iou", "0.4") == [
        "warning: --tta-iou 0.4 has no effect: there are no test-time views to fuse without --tta"
    ]
    assert warnings("--tta-iou", "0.4", "--tta", "flip2") == []
    assert warnings("--ensemble-iou", "0.4") == [
        "warning: --ensemble-iou 0.4 has no effect: there is one --model, nothing to fuse it with"
    ]


def test_several_models_run_as_the_library_ensemble_and_are_recorded(tmp_path, model):
    from scalemae_det.runtime import Detector
    from scalemae_det.runtime.ensemble import Ensemble

    coarse = build_model(tmp_path / "coarse.onnx", metadata(gsd=2.0, refine_boxes=2))
    scene = scene_with_squares(tmp_path / "a.tif", 150, 130, [(5, 5), (50, 9), (90, 40)], size=24)
    out = tmp_path / "out"
    done = predict(scene, "--model", model, "--model", coarse, "-o", out, "--ensemble-iou", "0.4")
    assert done.returncode == 0, done.stderr
    assert "ensemble of 2 models" in done.stderr
    described = " ".join(done.stderr.split())  # rich may wrap the lines
    assert re.search(r"coarse\.onnx: tile 64, batch \d+, GSD 2 m, box head 3 passes;", described)
    assert re.search(rf"{re.escape(model.name)}: tile 64, batch \d+, GSD [\d.]+ m;", described)
    features = json.loads((out / "a.geojson").read_text())["features"]
    got = np.array(sorted(f["properties"]["pixel_bbox"] for f in features))
    want = Ensemble([Detector(model, "cpu"), Detector(coarse, "cpu")], 0.4).detect_scene(scene)
    assert len(got) == len(want.detections) == 3
    np.testing.assert_allclose(got, sorted(want.detections.boxes.tolist()), atol=1e-3)
    (record,) = (out / "records").glob("*.jsonl")
    start = json.loads(record.read_text().splitlines()[0])
    assert start["model"] == [str(model), str(coarse)]
    digests = "".join(hashlib.sha256(p.read_bytes()).hexdigest() + "\n" for p in (model, coarse))
    assert start["model_sha256"] == hashlib.sha256(digests.encode()).hexdigest()
