"""SHA-256 of a file, read in 1 MiB pieces so a 1 GB model or checkpoint never sits in memory.

One helper for the export (which records its checkpoint's hash in the ONNX metadata) and the
runtime (whose run records name the model file, or the models of an ensemble, every output came
from).
"""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: list[str | os.PathLike]) -> str:
    """One file's SHA-256; of several (an ensemble), the SHA-256 of their digests in order, one a
    line, so the same models in the same order give the same hash."""
    digests = [sha256_file(p) for p in paths]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(d + "\n" for d in digests).encode("ascii")).hexdigest()
