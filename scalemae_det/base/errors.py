"""The exceptions for problems the user can fix (a bad file, a bad value), catchable as Python's
own.

`UserError` is the root the CLI catches: it prints one line and exits 1; anything else is a bug
and keeps its traceback. What is raised is one of its subclasses, each also a builtin exception a
Python caller already catches, as rasterio's errors are (rasterio/errors.py: `CRSError` is a
`ValueError`, `RasterioIOError` an `OSError`):

    InputError(UserError, ValueError)          a value or a file's content that cannot be used
      ParameterError(InputError)               ... the value of one named parameter
    PathError(UserError, OSError)              a path that cannot be read, written or created
      MissingPathError(PathError, FileNotFoundError)   ... one that does not exist
    InputWarning(UserWarning)                  used, but maybe not what was meant (a warning)

Messages name the file and the problem: "scene.tif: reading failed at window (0, 800)".

A bad value of a named parameter is a `ParameterError`: the library names the parameter as its
Python callers know it (`score_threshold`), and each command renders it in its own spelling of the
flag (`--score-threshold` for `scalemae-det`, `--score_threshold` for train.py, whose flags keep the
original ScaleMAE training script's underscores). A library never speaks of flags a Python caller
never typed, and a command never reports a parameter under a name its user cannot type.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Spelling = Callable[[str], str]  # parameter name -> how the caller writes it


def python_name(param: str) -> str:
    return param


def dashed_flag(param: str) -> str:
    """`scalemae-det`'s spelling: score_threshold -> --score-threshold."""
    return "--" + param.replace("_", "-")


class UserError(Exception):
    """The root of the problems a user can fix; raise one of its subclasses."""

    def render(self, spell: Spelling = python_name) -> str:
        """The one-line message, with parameters spelled by `spell`."""
        return str(self)


class InputError(UserError, ValueError):
    """A value, or the content of a file, that the library cannot use."""


class PathError(UserError, OSError):
    """A path that cannot be read, written or created (the message names it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MissingPathError(PathError, FileNotFoundError):
    """A path that does not exist."""


_PARAM_REF = re.compile(
    r"`(\w+)`"
)  # a parameter named inside a problem text: "use `gsd_mode` as-is"


class ParameterError(InputError):
    """`param` has a value the library cannot use. `problem` may name parameters in backticks (and
    must name
    `param` so when no `value` is given); `source` is the file the value was checked against, if
    any."""

    _UNSET = object()

    def __init__(self, param: str, problem: str, *, value=_UNSET, source: str | None = None):
        self.param, self.problem, self.value, self.source = param, problem, value, source
        super().__init__(self.render())

    def render(self, spell: Spelling = python_name) -> str:
        problem = _PARAM_REF.sub(lambda m: spell(m[1]), self.problem)
        where = f"{self.source}: " if self.source else ""
        if self.value is self._UNSET:
            return f"{where}{problem}"
        sep = "=" if spell is python_name else " "
        shown = repr(self.value) if spell is python_name else _plain(self.value)
        return f"{where}{spell(self.param)}{sep}{shown}: {problem}"


class InputWarning(UserWarning):
    """Input the library used but that may not give what the caller meant (a size taken from a
    default, a tile far from the training size). Issued with `warnings.warn`, so a Python caller
    filters or escalates it as any warning; the CLI prints it as one `warning: ...` line, with the
    parameters named in backticks spelled as its flags (as `ParameterError` does)."""

    def render(self, spell: Spelling = python_name) -> str:
        return _PARAM_REF.sub(lambda m: spell(m[1]), str(self.args[0]) if self.args else "")


def _plain(value) -> str:
    """A value as a user typed it: 4,3,2 for a list of bands, 2.0 for a float."""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)
