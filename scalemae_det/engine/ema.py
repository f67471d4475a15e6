"""An exponential moving average of the weights over training (train.py `--ema DECAY`).

A detector trained from scratch on a few hundred objects ends wherever its last noisy steps left
it; the average of its recent weights is a steadier model (Polyak and Juditsky 1992,
doi:10.1137/0330046; the same average YOLOv5 evaluates and saves, ultralytics/yolov5
utils/torch_utils.py `ModelEMA`). Rules, numbered as in the code:

1. The average starts as a copy of the weights before the first optimizer step.
2. After the t-th optimizer step (t = 1, 2, ...) every floating-point tensor of the state dict,
   parameters and buffers, becomes `avg = d_t * avg + (1 - d_t) * weight` with
   `d_t = min(decay, (1 + t) / (10 + t))`: the warm-up of TensorFlow's
   `tf.train.ExponentialMovingAverage(decay, num_updates=t)`, so that the first steps' weights
   fade fast instead of lasting ~1/(1 - decay) steps. Other tensors (counters) are copied.
3. A checkpoint's `model` holds the average: evaluation during training, `evaluate`, `export`,
   `--init_from` and the demo read it as any detector's weights. The weights being trained go in
   the training state (`train.weights`) with t (`train.ema_updates`); a resume restores both, so
   that it continues the same average.
4. Every rank updates its own copy from the same (DDP-synchronised) weights, so the copies agree.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_rate(decay: float, t: int) -> float:
    """d_t of rule 2 for the t-th update (t >= 1)."""
    return min(decay, (1 + t) / (10 + t))


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        # rule 1
        self.module = copy.deepcopy(getattr(model, "module", model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Rule 2, after an optimizer step of `model` (DDP-wrapped or not)."""
        self.updates += 1
        d = ema_rate(self.decay, self.updates)
        weights = getattr(model, "module", model).state_dict()
        for name, avg in self.module.state_dict().items():
            w = weights[name].detach()
            if avg.is_floating_point():
                avg.mul_(d).add_(w.to(avg.dtype), alpha=1 - d)
            else:
                avg.copy_(w)

    def load(self, averaged: dict[str, torch.Tensor], updates: int) -> None:
        """Rule 3, on resume: the average and its update count from a checkpoint."""
        self.module.load_state_dict(averaged)
        self.updates = updates
