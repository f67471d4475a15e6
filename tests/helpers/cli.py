"""Running the command line as users do: in a subprocess, with torch made unimportable."""

from __future__ import annotations

from pathlib import Path

from scalemae_det.synthetic.standin import scene_with_squares

REPO = Path(__file__).resolve().parents[2]
# Run the CLI with torch made unimportable: any attempt is reported on stderr and fails.
NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            sys.stderr.write(f"torch import attempted: {name}\\n")
            raise ImportError(f"{name} is not available here")
        return None

sys.meta_path.insert(0, NoTorch())
from scalemae_det.cli import main
sys.argv = ["scalemae-det", *sys.argv[1:]]
try:
    main()
finally:
    assert "torch" not in sys.modules
"""


def numbered_scenes(folder: Path, count: int, side: int) -> Path:
    """`folder` with scenes s0.tif .. s{count - 1}.tif, scene k holding k + 1 squares."""
    folder.mkdir()
    for k in range(count):
        scene_with_squares(
            folder / f"s{k}.tif", side, side, [(40 * j + 7, 30 * j + 5) for j in range(k + 1)]
        )
    return folder
