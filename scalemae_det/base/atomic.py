"""Write-then-rename, so a killed process never leaves a half-written output behind.

Temporary names carry the writer's process id (`.NAME.tmpPID` for a file, `.NAME.workPID` for a
work folder), so a later run can tell what a dead writer left (SIGKILL runs no cleanup) from what
a live one is still writing, and remove only the former.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|work)(?P<pid>\d+)$")


@contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    `keep_suffix` ends the temporary name with the final suffix too, for writers (GDAL's GeoPackage
    and FlatGeobuf drivers) that judge a file by its extension.
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}{final.suffix if keep_suffix else ''}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def work_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden work folder beside `path` (same filesystem, so its files can be renamed into place),
    removed on exit however the block ends; what dead writers of the same `path` left is removed
    first."""
    final = Path(path)
    remove_stale_temps(final.parent, final.name)
    work = final.with_name(f".{final.name}.work{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def remove_stale_temps(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files and work folders of writers that no longer run (killed mid-write);
    only those of output `name` when given. Returns what was removed."""
    removed = []
    for p in Path(folder).glob(".*"):
        m = _TEMP.match(p.name)
        if m and (name is None or m["name"] == name) and not _pid_alive(int(m["pid"])):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
