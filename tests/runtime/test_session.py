"""Provider choice around TensorRT's engine cache: a home that cannot be written costs TensorRT
only.

Tests run as root here, where file modes do not stop a mkdir, so the unwritable home is a path under
a regular file (mkdir fails with NotADirectoryError whoever runs it).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scalemae_det.base.errors import ParameterError, dashed_flag
from scalemae_det.runtime.session import NAMES, Session, trt_cache_dir
from scalemae_det.synthetic.standin import build_model, scene_with_squares

TRT = NAMES["tensorrt"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "standin.onnx")


@pytest.fixture
def blocked_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return home


@pytest.fixture
def trt_listed(monkeypatch):
    """onnxruntime as onnxruntime-gpu is: TensorRT listed as available (whether or not its libraries
    load)."""
    import onnxruntime as ort

    listed = ort.get_available_providers()
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: [TRT, *[p for p in listed if p != TRT]]
    )


def test_auto_with_an_unwritable_home_goes_on_without_tensorrt(model, blocked_home, trt_listed):
    session = Session(model, "auto")
    assert TRT not in session.providers and session.providers[-1] == NAMES["cpu"]
    cache = blocked_home / ".cache" / "scalemae-det" / "tensorrt"
    assert trt_cache_dir() == cache
    assert (
        f"{TRT} not usable: cannot create its engine cache {cache} (Not a directory)"
        in session.note
    )
    t = session.metadata.tile
    assert (
        len(session.run(np.zeros((session.batch, 3, t, t), np.float32))) == session.batch
    )  # and it runs


def test_tensorrt_asked_for_with_an_unwritable_home_is_refused_naming_the_folder(
    model, blocked_home, trt_listed
):
    with pytest.raises(ParameterError) as err:
        Session(model, "tensorrt")
    problem = (
        f"cannot create its engine cache {blocked_home}/.cache/scalemae-det/tensorrt (Not a "
        "directory); "
        "set XDG_CACHE_HOME to a writable folder"
    )
    assert str(err.value) == f"{model}: provider='tensorrt': {problem}"
    assert err.value.render(dashed_flag) == f"{model}: --provider tensorrt: {problem}"


def test_the_cache_folder_exists_only_when_tensorrt_runs(model, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    session = Session(model, "auto")
    assert trt_cache_dir() == tmp_path / "cache" / "scalemae-det" / "tensorrt"
    assert trt_cache_dir().is_dir() == (TRT in session.providers)
    if (
        TRT not in session.providers
    ):  # what the session made for TensorRT is taken back, nothing else
        assert not (tmp_path / "cache").exists()
    (tmp_path / "cache").mkdir(exist_ok=True)
    Session(model, "cpu")
    assert list((tmp_path / "cache").iterdir()) == []  # the CPU never makes it


def test_predict_with_an_unwritable_home_runs_and_says_why_not_tensorrt(
    model, tmp_path, blocked_home
):
    scene = scene_with_squares(tmp_path / "a.tif", 100, 80, [(10, 10)])
    env = {**os.environ, "HOME": str(blocked_home)}
    done = subprocess.run(
        [
            Path(sys.executable).with_name("scalemae-det"),
            "predict",
            str(scene),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "out"),
            "--provider",
            "auto",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "a.tif: 1 detections" in done.stderr and (tmp_path / "out" / "a.geojson").is_file()
    import onnxruntime as ort

    if TRT in ort.get_available_providers():
        assert (
            "cannot create its engine cache" in done.stderr
            and "not a loadable ONNX model" not in done.stderr
        )
