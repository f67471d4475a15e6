"""Process-group set-up from the launcher's environment, and gathering results to rank 0.

torchrun and `python -m torch.distributed.launch` both export RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT; the old launcher also passes `--local-rank`, used when LOCAL_RANK is unset.
Without them this is a single process and nothing is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from scalemae_det.base.errors import ParameterError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int) -> torch.device:
    """`auto` -> this process's GPU when there is one, else the CPU; `cuda` -> cuda:local_rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("device", "CUDA is not available on this machine", value=name)
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ParameterError(
                "device", f"only {torch.cuda.device_count()} GPU(s) visible", value=str(device)
            )
        torch.cuda.set_device(device)
    return device


def init_distributed(device: str = "auto", local_rank: int | None = None) -> DistInfo:
    """Join the process group when launched by torchrun or torch.distributed.launch (gloo on CPU,
    NCCL on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", local_rank if local_rank is not None else 0))
    dev = resolve_device(device, local)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return DistInfo(rank, world_size, local, dev)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0; None elsewhere."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Each value averaged over all ranks (every rank must call this at the same point)."""
    if not info.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return {k: v / info.world_size for k, v in zip(keys, t.tolist())}
