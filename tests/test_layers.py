"""The layers go one way, and everything installs under `scalemae_det`.

base (torch-free: errors, atomic writes, GSD, the ONNX contract, pixels)
  <- runtime (torch-free, edge boxes) <- models, data, metrics, engine, synthetic <- export
  <- the commands. metrics (torch-free too: numpy, pycocotools) is at layer 2 because it reads
  label files through data.labels.
A module may import its own layer and the layers below it, never one above.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import scalemae_det

PACKAGE = Path(scalemae_det.__file__).parent
# Lower number = lower layer. Modules are matched by their longest listed prefix.
LAYERS = {
    "scalemae_det.base": 0,
    "scalemae_det.runtime": 1,
    "scalemae_det.models": 2,
    "scalemae_det.data": 2,
    "scalemae_det.metrics": 2,
    "scalemae_det.engine": 2,
    "scalemae_det.synthetic": 2,
    "scalemae_det.export": 3,
    "scalemae_det.demo": 4,
    "scalemae_det.cli": 4,
}


def layer(module: str) -> int:
    """The package itself (its version and lazy names) is the bottom; every other module must be
    listed."""
    if module == "scalemae_det":
        return 0
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = [p for p in path.relative_to(PACKAGE).with_suffix("").parts if p != "__init__"]
        found[".".join(["scalemae_det", *parts])] = path
    return found


def imported(path: Path, name: str) -> set[str]:
    """Every scalemae_det module `path` imports, at the top or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out.add(base)
    return {m for m in out if m == "scalemae_det" or m.startswith("scalemae_det.")}


def test_every_folder_with_code_is_a_package():
    """setuptools finds packages by their __init__.py: a folder of modules without one would not
    install."""
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    assert all((folder / "__init__.py").exists() for folder in folders), sorted(folders)


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_go_down_the_layers(name):
    path = modules()[name]
    upward = {m: layer(m) for m in imported(path, name) if layer(m) > layer(name)}
    assert not upward, f"{name} (layer {layer(name)}) imports from higher layers: {upward}"


BLOCK_TORCH = """
import importlib, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm", "onnx"):
            raise ImportError(f"{name} imported")
sys.meta_path.insert(0, NoTorch())
for name in sys.argv[1:]:
    importlib.import_module(name)
assert "torch" not in sys.modules
"""


# Torch-free above layer 1: the metrics (numpy, pycocotools), so that `score` runs on an edge box.
TORCH_FREE = ("scalemae_det.metrics",)


def test_base_runtime_and_metrics_import_without_torch(tmp_path):
    names = sorted(
        n
        for n in modules()
        if layer(n) <= 1 or any(n == p or n.startswith(p + ".") for p in TORCH_FREE)
    )
    assert any(n.startswith("scalemae_det.base.") for n in names)
    assert "scalemae_det.metrics.scenes" in names
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, *names], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
