"""The package installs under one name: a wheel holds `scalemae_det` alone (no top-level `export` or
`runtime`, both taken on the package index), and a user's own export.py / runtime.py beside their
work does not shadow ours, in the editable install and in the plain wheel."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHADOWS = {"export.py": "raise ImportError('the user export.py was imported')\n",
           "runtime.py": "raise ImportError('the user runtime.py was imported')\n"}
# Imports across the mapped folders and runs the CLI's help, from a folder holding the shadowing files.
PROBE = """
import sys
import scalemae_det.export.onnx_export, scalemae_det.runtime.detector, scalemae_det.base.metadata
from scalemae_det.cli import main
print(scalemae_det.runtime.__file__)
sys.argv = ["scalemae-det", "predict", "--help"]
main()
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the checkout, so setuptools' build/ and egg-info never land in the sources."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                                  ".pytest_cache", "tests", "bench"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("scalemae_det-*.whl")
    return path


def test_wheel_holds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"scalemae_det"}
    for module in ("scalemae_det/export/onnx_export.py", "scalemae_det/runtime/detector.py",
                   "scalemae_det/base/metadata.py", "scalemae_det/cli/predict.py",
                   "scalemae_det/assets/vit_tiny_synthetic.pth"):
        assert module in names


def _probe(cwd: Path, env_path: str | None = None) -> subprocess.CompletedProcess:
    for name, text in SHADOWS.items():
        (cwd / name).write_text(text)
    env = {**os.environ, "PYTHONPATH": env_path} if env_path else None
    return subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, env=env)


def test_user_files_do_not_shadow_the_editable_install(tmp_path):
    done = _probe(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--model" in done.stdout and "user" not in done.stderr


def test_user_files_do_not_shadow_the_wheel(tmp_path, wheel):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    done = _probe(work, str(site))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(str(site))  # the wheel's copy, not the checkout's
    assert "--model" in done.stdout
