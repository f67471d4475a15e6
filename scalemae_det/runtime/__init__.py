"""Torch-free ONNX Runtime runner: tiled, streaming detection over GeoTIFF scenes.

Imports only numpy, onnxruntime and rasterio (plus typer/rich for the CLI): edge boxes have no
torch.

    from scalemae_det.runtime import Detector
    result = Detector("model.onnx").detect_scene("scene.tif")   # result.detections in scene pixels
    result = Detector("model.onnx").detect_scene("scene.tif", tta="flip4")  # mirrored views fused
    both = Ensemble([Detector("gsd0.045.onnx"), Detector("gsd0.05.onnx")])  # several models fused

The names are imported lazily, so `scalemae_det.base.metadata` stays cheap for the exporter.
"""

from importlib import import_module

_LAZY = {
    "Detector": "scalemae_det.runtime.detector",
    "Detections": "scalemae_det.runtime.detections",
    "Ensemble": "scalemae_det.runtime.ensemble",
    "SceneResult": "scalemae_det.runtime.detector",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scalemae_det.runtime' has no attribute {name!r}")


__all__ = list(_LAZY)
