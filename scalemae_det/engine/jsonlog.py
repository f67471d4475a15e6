"""One JSON object per line, appended: the training log that scripts and plots read back."""

from __future__ import annotations

import json
import time
from pathlib import Path


class JsonLines:
    """Appends records to `path` (created with its folder); a no-op when `enabled` is False (other
    ranks)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
