"""The errors a user can cause are catchable as Python's own exceptions, and none is raised bare."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

from scalemae_det.base import checks
from scalemae_det.base.errors import (
    InputError,
    InputWarning,
    MissingPathError,
    ParameterError,
    PathError,
    UserError,
    dashed_flag,
)
from scalemae_det.engine.options import train_flag

PACKAGE = Path(__file__).resolve().parents[2] / "scalemae_det"


def test_each_error_is_also_the_builtin_a_caller_catches():
    with pytest.raises(ValueError):
        checks.number("overlap", 1.5, lo=0, hi=1, hi_open=True)
    with pytest.raises(ValueError):
        checks.choice("format", "shp", ["geojson", "gpkg"])
    with pytest.raises(OSError):
        raise checks.write_failed("/nowhere/x.json", PermissionError(13, "Permission denied"))
    assert issubclass(MissingPathError, FileNotFoundError)
    for cls in (InputError, ParameterError, PathError, MissingPathError):
        assert issubclass(cls, UserError)


def test_an_input_warning_is_a_warning_a_caller_filters_and_names_flags_in_the_cli():
    warning = InputWarning("x.pt: `tile` 288 is 2.25x the training size")
    with pytest.warns(UserWarning, match="tile` 288"):
        warnings.warn(warning, stacklevel=1)
    assert warning.render(dashed_flag) == "x.pt: --tile 288 is 2.25x the training size"
    assert not isinstance(warning, UserError)  # never stops a run


def test_a_path_error_reads_as_its_message_not_as_an_errno_tuple():
    exc = PathError("scene.tif: cannot read (Permission denied)")
    assert str(exc) == exc.render(dashed_flag) == "scene.tif: cannot read (Permission denied)"


def test_an_unwritable_output_folder_is_an_oserror_without_a_parameter(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PathError, match="is a file, not a folder"):
        checks.output_dir(blocker)
    with pytest.raises(ParameterError) as caught:
        checks.output_dir(blocker, "out")
    assert caught.value.render(dashed_flag).startswith(f"--out {blocker}:")


def test_the_package_never_raises_the_bare_root():
    """Every raise names a subclass, so every error is also a ValueError or an OSError."""
    bare = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            made = node.exc if isinstance(node, ast.Raise) else getattr(node, "value", None)
            if isinstance(node, ast.Raise | ast.Return) and isinstance(made, ast.Call):
                func = made.func
                if isinstance(func, ast.Name) and func.id == "UserError":
                    bare.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not bare, f"raise InputError or PathError instead of UserError at {bare}"


def test_library_errors_name_the_parameter_and_each_command_spells_it():
    from scalemae_det.base import checks
    from scalemae_det.base.errors import ParameterError, dashed_flag

    with pytest.raises(ParameterError) as exc:
        checks.bands("bands", [0, 1, 2])
    assert (
        str(exc.value)
        == "bands=[0, 1, 2]: band numbers start at 1 (the first band is 1, as in GDAL)"
    )
    assert exc.value.render(dashed_flag).startswith("--bands 0,1,2: band numbers start at 1")
    assert exc.value.render(train_flag).startswith("--bands 0,1,2:")
    err = ParameterError(
        "score_threshold", "below; use `score_threshold` 0.3", value=0.1, source="m.onnx"
    )
    assert (
        err.render(dashed_flag) == "m.onnx: --score-threshold 0.1: below; use --score-threshold 0.3"
    )
    assert str(err) == "m.onnx: score_threshold=0.1: below; use score_threshold 0.3"
