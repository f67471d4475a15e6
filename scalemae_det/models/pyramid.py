"""ViTDet's simple feature pyramid: strides 4..32 from the single stride-16 map, plus p6 for the
RPN."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn


def _output_convs(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, 1, bias=False),
        LayerNorm2d(out_dim),
        nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False),
        LayerNorm2d(out_dim),
    )


class SimpleFeaturePyramid(nn.Module):
    """Levels ordered fine to coarse (p2 first): torchvision derives RoI level ranges from that
    order."""

    names = ("p2", "p3", "p4", "p5", "p6")
    strides = (4, 8, 16, 32, 64)

    def __init__(self, in_dim: int, out_dim: int = 256):
        super().__init__()
        self.out_channels = out_dim
        self.scales = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(in_dim, in_dim // 2, 2, 2),
                    LayerNorm2d(in_dim // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(in_dim // 2, in_dim // 4, 2, 2),
                ),
                nn.ConvTranspose2d(in_dim, in_dim // 2, 2, 2),
                nn.Identity(),
                nn.MaxPool2d(2, 2),
            ]
        )
        self.outputs = nn.ModuleList(
            _output_convs(d, out_dim) for d in (in_dim // 4, in_dim // 2, in_dim, in_dim)
        )

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        levels = [out(scale(x)) for scale, out in zip(self.scales, self.outputs)]
        levels.append(F.max_pool2d(levels[-1], kernel_size=1, stride=2))
        return OrderedDict(zip(self.names, levels))
