"""The ScaleMAE ViT trunk, with ViTDet's windowed attention, returning the stride-16 map.

Parameter names follow the released checkpoints (`patch_embed.proj`, `blocks.N.attn.qkv`, ...)
so that `load_pretrained` is a straight key match.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention, DropPath, Mlp, PatchEmbed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from scalemae_det.models.configs import DetectorConfig
from scalemae_det.models.pos_embed import gsd_sincos_pos_embed


def window_partition(x: Tensor, window: int) -> tuple[Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, window * window, C), zero-padding H and W up to multiples of window."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c), (hp, wp)


def window_unpartition(x: Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]) -> Tensor:
    """Inverse of `window_partition`, cropping the padding back off."""
    hp, wp = padded_hw
    b = x.shape[0] // ((hp // window) * (wp // window))
    x = x.view(b, hp // window, wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, -1)[:, : hw[0], : hw[1]]


class Block(nn.Module):
    """Pre-norm transformer block on a (B, H, W, C) grid; attention global or within windows."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, window_size: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        y = self.norm1(x)
        if self.window_size > 0:
            y, padded = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(y), self.window_size, padded, (h, w))
        else:
            y = self.attn(y.reshape(b, h * w, c)).view(b, h, w, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ScaleMAEViT(nn.Module):
    """Patch embedding + GSD positional embedding + blocks + final norm; no cls token."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.embed_dim, self.patch_size = cfg.embed_dim, cfg.patch_size
        self.grad_checkpointing = cfg.grad_checkpointing
        self.patch_embed = PatchEmbed(img_size=None, patch_size=cfg.patch_size, in_chans=3,
                                      embed_dim=cfg.embed_dim, output_fmt="NHWC")
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, rates[i],
                  0 if i in cfg.global_blocks else cfg.window_size)
            for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def forward(self, x: Tensor, res: float | Tensor) -> Tensor:
        """Normalised images (B, 3, H, W), H and W multiples of the patch -> (B, C, H/16, W/16)."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return self.forward_with_pos(x, gsd_sincos_pos_embed(self.embed_dim, (h, w), res).to(x.device))

    def forward_with_pos(self, x: Tensor, pos_embed: Tensor) -> Tensor:
        """Same, with the positional embedding given: (H*W, C) or (B, H*W, C). Export bakes it in here."""
        x = self.patch_embed(x)
        b, h, w, c = x.shape
        # The residual stream keeps the parameters' dtype (float32 when training, whatever autocast
        # makes of the attention and MLP branches), as detectron2's ViT and ScaleMAE do; casting to
        # the branches' bf16 would round every block's sum. A half-precision export keeps it half.
        stream = self.patch_embed.proj.weight.dtype
        x = x.to(stream) + pos_embed.to(stream).reshape(-1, h, w, c)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.grad_checkpointing and self.training else block(x)
        return self.norm(x).permute(0, 3, 1, 2)
