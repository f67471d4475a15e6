"""Torch-free ONNX Runtime runner: tiled, streaming detection over GeoTIFF scenes.

Imports only numpy, onnxruntime and rasterio (plus typer/rich for the CLI): edge boxes have no torch.
"""
