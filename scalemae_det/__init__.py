"""ScaleMAE ViTDet detector for satellite imagery.

The public names are imported lazily so that the CLI (and the torch-free runtime behind it)
starts without importing torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "gsd_sincos_pos_embed": "scalemae_det.models.pos_embed",
    "build_detector": "scalemae_det.models.detector",
    "load_pretrained": "scalemae_det.models.weights",
    "CONFIGS": "scalemae_det.models.configs",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scalemae_det' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
