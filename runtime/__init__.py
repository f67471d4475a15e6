"""Torch-free ONNX Runtime runner: tiled, streaming detection over GeoTIFF scenes.

Imports only numpy, onnxruntime and rasterio (plus typer/rich for the CLI): edge boxes have no torch.

    from runtime import Detector
    result = Detector("model.onnx").detect_scene("scene.tif")   # result.detections in scene pixels

The names are imported lazily, so `runtime.metadata` stays cheap for the exporter.
"""

from importlib import import_module

_LAZY = {"Detector": "runtime.detector", "Detections": "runtime.detector", "SceneResult": "runtime.detector"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


__all__ = list(_LAZY)
