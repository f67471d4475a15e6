"""Synthetic georeferenced satellite scenes with COCO ground truth: the project's embedded data.

Torch-free (numpy and rasterio), so the runtime's tests and benchmarks can use it too.
"""

from scalemae_det.synthetic.layout import CLASS_NAMES, Layout, make_scene
from scalemae_det.synthetic.render import render_window
from scalemae_det.synthetic.writers import write_chips, write_scene

__all__ = ["CLASS_NAMES", "Layout", "make_scene", "render_window", "write_chips", "write_scene"]
