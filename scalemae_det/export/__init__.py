"""Exporters: a trained checkpoint to ONNX (main path) or TorchScript at a fixed GSD."""
