"""Option values and output paths, checked before any work, the same way in every command.

Every command takes numbers, choices and output paths; checking them here, once, means that
`predict --score-threshold nan`, `export --gsd inf` and `evaluate -o missing/m.json` all fail
before a model is loaded or a scene read, with one line naming the parameter (see
`errors.ParameterError`) or the path, instead of after minutes of work or with a traceback.

    number("overlap", 0.2, lo=0, hi=1, hi_open=True)    NaN and infinity are refused everywhere
    choice("format", "csv", FORMATS)
    bands("bands", "4,3,2") -> [4, 3, 2]                band numbers are 1-based, as GDAL's
    output_file(path, "out")                            a file we can create or replace
    output_dir(path, "out")                             a folder we can create and write into

A path check cannot promise that the write succeeds (a disk may fill); `write_failed` turns the
OSError of a failed write into the same kind of one-line message.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from scalemae_det.base.errors import ParameterError, PathError, UserError


def _interval(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if hi is None:
        return (
            f"must be {'greater than' if lo_open else 'at least'} {lo}"
            if lo != 0 or not lo_open
            else "must be positive"
        )
    if lo is None:
        return f"must be {'less than' if hi_open else 'at most'} {hi}"
    return f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def number(
    param: str,
    value,
    *,
    lo=None,
    hi=None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    source: str | None = None,
):
    """`value` if it is a finite number in the interval, else a ParameterError; None passes
    (unset)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(param, "must be a number", value=value, source=source)
    if integer and not float(value).is_integer():
        raise ParameterError(param, "must be a whole number", value=value, source=source)
    if not math.isfinite(value):
        bounds = (
            f"; {_interval(lo, hi, lo_open, hi_open)}" if lo is not None or hi is not None else ""
        )
        raise ParameterError(param, f"not a finite number{bounds}", value=value, source=source)
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        raise ParameterError(param, _interval(lo, hi, lo_open, hi_open), value=value, source=source)
    return value


def choice(param: str, value: str, choices: Iterable[str]):
    """`value` if it is one of `choices`; the one check of allowed values (Enums and tuples
    alike)."""
    allowed = [getattr(c, "value", c) for c in choices]
    got = getattr(value, "value", value)
    if got not in allowed:
        raise ParameterError(param, f"expected one of {', '.join(map(str, allowed))}", value=got)
    return value


def bands(param: str, text: str | Sequence[int] | None) -> list[int] | None:
    """ "4,3,2" (or a list) -> [4, 3, 2]: 1 or 3 band numbers, 1-based; None or "" -> None (the
    default choice)."""
    if text is None or text == "" or (not isinstance(text, str) and not len(text)):
        return None
    if isinstance(text, str):
        try:
            values = [int(b) for b in text.split(",")]
        except ValueError:
            raise ParameterError(
                param, "expected 1 or 3 comma-separated band numbers, e.g. 4,3,2", value=text
            ) from None
    else:
        values = [int(b) for b in text]
    if any(b < 1 for b in values):
        raise ParameterError(
            param, "band numbers start at 1 (the first band is 1, as in GDAL)", value=values
        )
    if len(values) not in (1, 3):
        raise ParameterError(param, f"takes 1 or 3 band numbers, got {len(values)}", value=values)
    return values


def value_scale(param: str, text: str | tuple[float, float]) -> str | tuple[float, float]:
    """ "auto" or "MIN,MAX" (finite, MIN < MAX) -> "auto" or (MIN, MAX)."""
    if isinstance(text, str):
        if text == "auto":
            return text
        try:
            lo, hi = (float(v) for v in text.split(","))
        except ValueError:
            raise ParameterError(param, "expected auto or MIN,MAX", value=text) from None
    else:
        lo, hi = (float(v) for v in text)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ParameterError(param, "needs finite MIN < MAX", value=f"{lo:g},{hi:g}")
    return lo, hi


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in `folder`, or None."""
    if not folder.exists():
        return f"folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable"
    return None


def _path_error(path: Path, param: str | None, problem: str) -> UserError:
    if param is None:
        return PathError(f"{path}: {problem}")
    return ParameterError(param, problem, value=str(path))


def output_file(
    path: str | os.PathLike, param: str | None = None, new_folder: bool = False
) -> Path:
    """A file path that can be written (created, or replaced by a rename): its folder exists and is
    writable, or, with `new_folder`, can be created (the writer makes it)."""
    path = Path(path)
    if path.is_dir():
        raise _path_error(path, param, "is a folder; give a file name")
    folder = path.absolute().parent
    problem = _folder_problem(_nearest_existing(folder) if new_folder else folder)
    if problem:
        raise _path_error(path, param, problem)
    return path


def output_dir(path: str | os.PathLike, param: str | None = None, create: bool = True) -> Path:
    """A folder to write into: an existing writable folder, or one that can be (and, with `create`,
    is) made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise _path_error(path, param, "is a file, not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise _path_error(path, param, "folder is not writable")
        return path
    problem = _folder_problem(_nearest_existing(path.absolute().parent))
    if problem:
        raise _path_error(path, param, f"cannot create it: {problem}")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_failed(path, exc, "cannot create the folder") from None
    return path


def write_failed(path: str | os.PathLike, exc: OSError, doing: str = "cannot write") -> PathError:
    """The UserError for an OSError met while writing `path` (disk full, permissions, a vanished
    folder)."""
    target = exc.filename or path
    return PathError(f"{target}: {doing} ({exc.strerror or exc})")


__all__ = ["bands", "choice", "number", "output_dir", "output_file", "value_scale", "write_failed"]
