"""ZFTurbo's weighted box fusion (the ensemble-boxes package, by the method's first author): the
independent reference for runtime.tta.fuse and the ensembles built on it."""

import importlib.util
from pathlib import Path

import pytest


def reference_wbf():
    """ensemble_boxes' wbf module alone, which needs only numpy (the package's __init__ also
    imports modules that need numba); skips the test when the package is absent."""
    spec = importlib.util.find_spec("ensemble_boxes")
    if spec is None:
        pytest.skip("ensemble-boxes is not installed (the README's test command installs it)")
    path = Path(spec.submodule_search_locations[0]) / "ensemble_boxes_wbf.py"
    module_spec = importlib.util.spec_from_file_location("ensemble_boxes_wbf", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.weighted_boxes_fusion
