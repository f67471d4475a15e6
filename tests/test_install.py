"""The package installs under one name: a built wheel holds `scalemae_det` alone, with every layer
and the bundled model inside it (`export` and `runtime` are taken on the package index, so neither
may appear at the top)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the checkout, so setuptools' build/ and egg-info never land in the
    sources."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "tests", "bench"
        ),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("scalemae_det-*.whl")
    return path


def test_wheel_holds_one_top_level_package_with_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"scalemae_det"}
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "scalemae_det").rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    assert "scalemae_det/assets/vit_tiny_synthetic.pth" in names


def test_wheel_imports_from_outside_the_checkout(tmp_path, wheel):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import scalemae_det.runtime.detector as d, scalemae_det.export.onnx_export, "
        "scalemae_det.cli;"
        "print(d.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(site))  # the wheel's copy, not the checkout's
