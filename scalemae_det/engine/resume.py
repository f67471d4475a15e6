"""Resuming training: training-state checkpoints written atomically, pruned, the newest valid one
found, and RNG states. (Reading weight files is `models.weights`.)

Files live beside `--save_checkpoint_path` P: `P.stem-step00001234.pth` every `--save_every`
steps and at each epoch's end (the newest few kept), and P itself when training ends. Each is
written to a temporary name and renamed, so a SIGKILL leaves either the old file or the new
one; the temporary file a killed process leaves behind is removed by the next run.
Everything is stored as tensors and plain Python values so `read_checkpoint`
(weights_only=True) loads it.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scalemae_det.base.atomic import atomic_path
from scalemae_det.base.errors import InputError, UserError
from scalemae_det.models.weights import read_checkpoint


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states (torch CPU and GPU, numpy, Python) as plain values."""
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": [version, list(mt), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def step_path(save_path: Path, global_step: int) -> Path:
    return save_path.with_name(f"{save_path.stem}-step{global_step:08d}{save_path.suffix}")


def step_paths(save_path: Path) -> list[Path]:
    """The step checkpoints beside `save_path`, oldest first."""
    pattern = re.compile(
        rf"^{re.escape(save_path.stem)}-step(\d{{8}}){re.escape(save_path.suffix)}$"
    )
    found = [(int(m[1]), p) for p in save_path.parent.glob("*") if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def prune(save_path: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints."""
    for old in step_paths(save_path)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)


def is_training_checkpoint(ckpt: dict[str, Any]) -> bool:
    return isinstance(ckpt.get("train"), dict) and "global_step" in ckpt["train"]


def load_resumable(path: Path) -> dict[str, Any]:
    ckpt = read_checkpoint(path)
    if not is_training_checkpoint(ckpt):
        raise InputError(
            f"{path}: not a training checkpoint (no optimizer/step state to resume from)"
        )
    return ckpt


def newest_valid(save_path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The most recently written checkpoint beside `save_path` that loads and holds training
    state."""
    candidates = [p for p in [save_path, *step_paths(save_path)] if p.is_file()]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime_ns, reverse=True):
        try:
            return path, load_resumable(path)
        except UserError:
            continue
    return None
