"""One training epoch and one pass of inference, on whatever rank this process is.

Loss normalisation: torchvision's detection losses average over the anchors and RoIs sampled in
the batch, and DDP averages gradients over ranks, so N ranks with batch b match one process
with batch N*b when every image contributes the same number of samples (the usual case:
`rpn_batch_per_image` and `roi_batch_per_image` are filled). Accumulated micro-batches are
divided by the accumulation count, which keeps the same equivalence in time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from scalemae_det.base.errors import ParameterError
from scalemae_det.data.coco import batch_gsd
from scalemae_det.engine.distributed import DistInfo

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
AMP_CHOICES = ("auto", *AMP_DTYPES)


def autocast(amp: str, device: torch.device):
    if amp == "off":
        return nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def resolve_amp(amp: str, device: torch.device) -> str:
    """`auto` -> bf16 on a GPU that supports it, else off; fp16 is for GPUs only."""
    if amp == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    if amp == "fp16" and device.type != "cuda":
        raise ParameterError("amp", "fp16 needs a GPU; use bf16 or off on the CPU", value=amp)
    return amp


def make_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler that only acts under fp16 (bf16 has float32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def to_device(images: list[Tensor], targets: list[dict], device: torch.device):
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()}
        for t in targets
    ]
    return images, targets


@dataclass
class Position:
    """Where training is: what a checkpoint records and a resumed run starts from."""

    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps done in `epoch`
    global_step: int = 0
    eval_pending: bool = (
        False  # `epoch` counts the epoch before it as trained, but its evaluation has not run
    )


@dataclass
class StepStats:
    losses: dict[str, float] = field(
        default_factory=dict
    )  # this rank's mean over the micro-batches
    grad_norm: float | None = None
    lr: float = 0.0  # the top group's (base lr x schedule) for this step
    images: int = 0  # on this rank
    seconds: float = 0.0


def train_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    progress: Position,
    info: DistInfo,
    *,
    amp: str = "off",
    accum_steps: int = 1,
    clip_grad: float = 0.0,
    on_step: Callable[[Position, StepStats], None] = lambda p, s: None,
) -> None:
    """Train on `batches` (the rest of the epoch), calling `on_step` after every optimizer step."""
    model.train()
    micro, stats, start = 0, StepStats(), time.perf_counter()
    for images, targets in batches:
        images, targets = to_device(images, targets, info.device)
        micro += 1
        stepping = micro % accum_steps == 0
        sync = nullcontext() if stepping or not info.distributed else model.no_sync()
        with sync:
            with autocast(amp, info.device):
                losses = model(images, targets, gsd=batch_gsd(targets).to(info.device))
            loss = sum(losses.values())
            scaler.scale(loss / accum_steps).backward()
        for k, v in losses.items():
            stats.losses[k] = stats.losses.get(k, 0.0) + float(v.detach()) / accum_steps
        stats.images += len(images)
        if not math.isfinite(float(loss.detach())) and not scaler.is_enabled():
            parts = ", ".join(f"{k} {float(v):.4g}" for k, v in losses.items())
            raise FloatingPointError(
                f"loss is {float(loss)} at epoch {progress.epoch + 1}, step "
                f"{progress.step_in_epoch + 1} "
                f"(global step {progress.global_step + 1}; {parts})"
            )
        if not stepping:
            continue
        if clip_grad > 0:
            scaler.unscale_(optimizer)
            stats.grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad))
        stats.lr = optimizer.param_groups[-1]["lr"]
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        progress.step_in_epoch += 1
        progress.global_step += 1
        stats.seconds = time.perf_counter() - start
        on_step(progress, stats)
        stats, start = StepStats(), time.perf_counter()


def predict_batches(
    model: nn.Module,
    batches: Iterable,
    info: DistInfo,
    *,
    amp: str = "off",
    on_batch: Callable[[int], None] = lambda n: None,
) -> Iterator[tuple[dict, dict]]:
    """Yields (output, target) per image of `batches`, outputs on the CPU in float32."""
    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    try:
        for images, targets in batches:
            dev_images = [img.to(info.device, non_blocking=True) for img in images]
            with torch.no_grad(), autocast(amp, info.device):
                outputs = model(dev_images, gsd=batch_gsd(targets).to(info.device))
            on_batch(len(images))
            for out, tgt in zip(outputs, targets):
                yield (
                    {
                        k: v.float().cpu() if v.is_floating_point() else v.cpu()
                        for k, v in out.items()
                    },
                    tgt,
                )
    finally:
        model.train(was_training)
