"""SHA-256 of a file, read in 1 MiB pieces so a 1 GB model or checkpoint never sits in memory.

One helper for the export (which records its checkpoint's hash in the ONNX metadata) and the
runtime (whose run records name the model file every output came from).
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
