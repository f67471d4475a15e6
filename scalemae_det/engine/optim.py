"""AdamW with ViTDet's layer-wise lr decay, and the warmup + cosine/step schedule.

Layer ids follow ViTDet: the patch embedding is layer 0, trunk block i is layer i + 1, and
everything after the trunk's blocks (final norm, pyramid, heads) is layer L + 1, so a group's
lr is the base lr times rate^(L + 1 - layer_id). Norm weights, biases and position tables get
no weight decay: decaying them towards zero only hurts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

STEP_DROPS = (0.889, 0.963)  # ViTDet's 184k-iteration schedule drops x0.1 at 163889 and 177546
_NO_DECAY_NAMES = ("pos_embed", "rel_pos")


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Parameter name -> ViTDet layer id, for a detector (or a DDP-wrapped one)."""
    model = getattr(model, "module", model)
    trunk = model.backbone.trunk
    depth = len(trunk.blocks)
    by_param = {id(p): 0 for p in trunk.patch_embed.parameters()}
    for i, block in enumerate(trunk.blocks):
        by_param.update({id(p): i + 1 for p in block.parameters()})
    return {name: by_param.get(id(p), depth + 1) for name, p in model.named_parameters()}


def decays(name: str, param: nn.Parameter) -> bool:
    return param.ndim > 1 and not any(t in name for t in _NO_DECAY_NAMES)


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """One group per (layer, decay or not), each with its `lr_scale` and `weight_decay`."""
    model = getattr(model, "module", model)
    ids = layer_ids(model)
    top = max(ids.values())
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (ids[name], decays(name, param))
        group = groups.setdefault(
            key,
            {
                "params": [],
                "names": [],
                "layer_id": key[0],
                "lr_scale": layer_decay ** (top - key[0]),
                "weight_decay": weight_decay if key[1] else 0.0,
            },
        )
        group["params"].append(param)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay, layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int,
    schedule: str,
    drops: Sequence[float] = STEP_DROPS,
) -> float:
    """Multiplier of the base lr before optimizer step `step` (0-based) of `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    if schedule == "step":
        return 0.1 ** sum(step >= f * total_steps for f in drops)
    raise ValueError(f"unknown schedule {schedule!r}; choose cosine or step")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    schedule: str,
    drops: Sequence[float] = STEP_DROPS,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimizer step; its state is just the step count, so it resumes exactly."""
    lr_factor(warmup_steps, total_steps, warmup_steps, schedule, drops)  # reject a bad name now
    drops = tuple(drops)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule, drops)
    )
