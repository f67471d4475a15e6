"""Write-then-rename, so a killed process never leaves a half-written output behind."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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
