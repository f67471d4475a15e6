"""The torch-free base every layer may use: user errors, the checks of option values and output
paths, atomic writes, ground sample distance, the ONNX contract between an export and the runtime,
and pixel reading and scaling.

It imports numpy and rasterio at most, never torch, and nothing else of this package: the
runtime (which edge boxes install without torch) stands on it alone.
"""
