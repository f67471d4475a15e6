"""Reading weights: the published ScaleMAE encoders, and this project's detector checkpoints.

Everything loads with `torch.load(weights_only=True)`; the only classes let through are the two
that the original ScaleMAE release pickles in its `args` entry.
"""

from __future__ import annotations

import argparse
import pathlib
import pickle
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalemae_det.base.errors import InputError, MissingPathError
from scalemae_det.models.configs import DetectorConfig

CHECKPOINT_FORMAT = "scalemae-det/1"

# Entries of the original release that are not part of the encoder (the MAE decoder and heads).
_RELEASE_EXTRAS = (
    "decoder_",
    "mask_token",
    "mask_token_decoder",
    "pos_emb_projection",
    "fpn.",
    "fcn.",
    "fcn_high.",
    "fcn_low.",
)
# Encoder entries the detector does not use: the cls token, the unused fixed table, a classifier.
_UNUSED = ("cls_token", "pos_embed", "head.", "fc_norm.")
_REL_POS = ("rel_pos_h", "rel_pos_w")  # models/vit.py's optional tables
_SAFE_GLOBALS = [
    argparse.Namespace,
    pathlib.PosixPath,
    pathlib.PurePosixPath,
    pathlib.WindowsPath,
    pathlib.PureWindowsPath,
]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; a pickle that wants to run code is refused, not run."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is a paragraph around one telling line: a blocked GLOBAL (code to import
        # and call, i.e. not weights) or, after "WeightsUnpickler error:", bytes that are no pickle
        # at all
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or ["?"]
        blocked = next((line for line in lines if "GLOBAL" in line), None)
        if blocked:
            raise InputError(
                f"{path}: refused to load: it holds objects that are not plain weights ({blocked})"
            ) from None
        marker = next((i for i, line in enumerate(lines) if "WeightsUnpickler error" in line), None)
        detail = lines[marker + 1] if marker is not None and marker + 1 < len(lines) else lines[0]
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({detail})") from None
    except Exception as exc:  # a truncated or foreign file fails in many ways inside the unpickler
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    return obj


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # in the file, not used by the detector
    missing: list[str] = field(default_factory=list)  # trunk parameters the file did not provide
    zeroed: list[str] = field(
        default_factory=list
    )  # relative position tables it lacks, set to zero

    def __str__(self) -> str:
        text = (
            f"loaded {len(self.loaded)}, skipped {len(self.skipped)}, missing {len(self.missing)}"
        )
        return text + (
            f", relative position tables zero-initialised {len(self.zeroed)}" if self.zeroed else ""
        )


def _encoder_state(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = obj.get("model", obj)
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return state


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load ScaleMAE encoder weights (original release or torchgeo layout) into the detector's
    trunk."""
    trunk = model.backbone.trunk
    state = _encoder_state(read_checkpoint(path))
    own = trunk.state_dict()
    report = LoadReport()
    usable = {}
    for key, value in state.items():
        if key.startswith(_RELEASE_EXTRAS) or key.startswith(_UNUSED) or key not in own:
            report.skipped.append(key)
            continue
        if value.shape != own[key].shape:
            raise InputError(
                f"{path}: {key} has shape {tuple(value.shape)} but the model "
                f"({model.config.name}) expects {tuple(own[key].shape)}: weights of another model "
                "size?"
            )
        usable[key] = value
    if not usable:
        raise InputError(
            f"{path}: no ScaleMAE encoder weights found (keys like 'blocks.0.attn.qkv.weight')"
        )
    report.loaded = sorted(usable)
    absent = sorted(set(own) - set(usable))
    # MAE-style encoders have no relative position bias: ViTDet starts its tables at zero, so the
    # trunk computes exactly what the pretrained encoder did (models/vit.py)
    report.zeroed = [key for key in absent if key.rsplit(".", 1)[-1] in _REL_POS]
    report.missing = [key for key in absent if key not in report.zeroed]
    trunk.load_state_dict(
        {**usable, **{key: torch.zeros_like(own[key]) for key in report.zeroed}}, strict=False
    )
    return report


def config_to_dict(cfg: DetectorConfig) -> dict[str, Any]:
    return asdict(cfg)


def config_from_dict(values: dict[str, Any]) -> DetectorConfig:
    """Inverse of `config_to_dict` (lists back to tuples); unknown keys are an error, not
    ignored."""
    types = {f.name for f in fields(DetectorConfig)}
    unknown = set(values) - types
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}")
    return DetectorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def detector_state(
    model: nn.Module, class_names: list[str], gsd: float, **extra: Any
) -> dict[str, Any]:
    """The checkpoint dict every consumer (resume, evaluate, export, the demo) reads.

    `gsd` is the typical GSD in metres the model was trained at: the export's default scale.
    Training adds its own entries (optimizer, scheduler, RNG, ...) through `extra`.
    """
    model = getattr(model, "module", model)  # unwrap DDP
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "config": config_to_dict(model.config),
        "class_names": list(class_names),
        "gsd": float(gsd),
        **extra,
    }


def read_detector_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `detector_state` (train.py), refusing anything else."""
    ckpt = read_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt or "config" not in ckpt:
        raise InputError(
            f"{path}: not a scalemae-det detector checkpoint (format {ckpt.get('format')!r})"
        )
    return ckpt


SHOWN = 3  # mismatching keys named in a message; the rest are counted


def _some(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def check_weights(
    path: str | Path, state: dict[str, torch.Tensor], model: nn.Module, expected: str
) -> None:
    """Refuse weights that do not fit `model` or are not finite, in one line.

    `load_state_dict` would report every mismatching tensor (kilobytes for a checkpoint of another
    model size); the first few keys and shapes and the config the model was built from say enough.
    A NaN or infinite weight (a diverged run) would export and run, and detect nothing.
    """
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if wrong or missing or unexpected:
        parts = (
            ([f"shapes differ: {_some(wrong)}"] if wrong else [])
            + ([f"missing: {_some(missing)}"] if missing else [])
            + ([f"unexpected: {_some(unexpected)}"] if unexpected else [])
        )
        raise InputError(f"{path}: weights do not fit {expected}; {'; '.join(parts)}")
    bad = [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise InputError(
            f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values ({_some(bad)}); "
            "the run that wrote it diverged: use an earlier checkpoint"
        )


def describe(cfg: DetectorConfig, num_classes: int) -> str:
    """The config a checkpoint's weights must fit, as a message names it."""
    return (
        f"the {cfg.name} config (embed_dim {cfg.embed_dim}, depth {cfg.depth}, patch "
        f"{cfg.patch_size}) "
        f"with {num_classes} classes"
    )


def load_detector(path: str | Path, **overrides):
    """A detector checkpoint written by train.py -> (model in eval mode, the checkpoint dict)."""
    from scalemae_det.models.detector import ScaleMAEDetector

    ckpt = read_detector_checkpoint(path)
    cfg = config_from_dict(ckpt["config"]).with_overrides(**overrides)
    model = ScaleMAEDetector(cfg, num_classes=len(ckpt["class_names"]))
    check_weights(path, ckpt["model"], model, describe(cfg, len(ckpt["class_names"])))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt
