"""The ScaleMAE ViT trunk, with ViTDet's windowed attention, returning the stride-16 map.

Parameter names follow the released checkpoints (`patch_embed.proj`, `blocks.N.attn.qkv`, ...)
so that `load_pretrained` is a straight key match.

Optionally (`DetectorConfig.rel_pos`) each attention layer adds ViTDet's decomposed relative
position bias (Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection",
ECCV 2022, taken from MViTv2, Li et al., CVPR 2022; detectron2 modeling/backbone/vit.py and
utils.py `add_decomposed_rel_pos`): the logit of query (i, j) and key (k, l) gains
q . Rh[i - k] + q . Rw[j - l], with one table per axis of 2 * side - 1 rows of head_dim
(`rel_pos_h`, `rel_pos_w`, detectron2's names). Decomposed rather than a full 2-D table, the
parameters grow with the side, not its square. The tables start at zero, so a pretrained trunk
without them computes exactly what it did (detectron2's `rel_pos_zero_init`, its default). The
bias goes to `scaled_dot_product_attention` as its additive mask, so with the option off the
attention is the very same call as timm's fused one; with it on, each block holds a
(B, heads, N, N) bias, as detectron2's explicit attention holds its logits, and CUDA cannot use
its flash kernel (the memory-efficient one takes a bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from scalemae_det.models.configs import DetectorConfig
from scalemae_det.models.pos_embed import gsd_sincos_pos_embed


def window_partition(x: Tensor, window: int) -> tuple[Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, window, window, C), zero-padding H and W up to multiples of
    window."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    x: Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> Tensor:
    """Inverse of `window_partition`, cropping the padding back off."""
    hp, wp = padded_hw
    b = x.shape[0] // ((hp // window) * (wp // window))
    x = x.view(b, hp // window, wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, -1)[:, : hw[0], : hw[1]]


def rel_pos_table(table: Tensor, side: int) -> Tensor:
    """(L, D) table of relative offsets -> (side, side, D): entry [i, k] is the row of offset i - k.

    A table built for another side is first resized to 2 * side - 1 rows by linear interpolation
    along the offsets, as detectron2's `get_rel_pos` does (detectron2/modeling/backbone/utils.py):
    a global block's table is built for the training grid and meets other grids at test time.
    """
    rows = 2 * side - 1
    if table.shape[0] != rows:
        table = F.interpolate(table.t()[None], size=rows, mode="linear")[0].t()
    offsets = torch.arange(side, device=table.device)
    return table[offsets[:, None] - offsets[None, :] + side - 1]


def decomposed_rel_pos_bias(
    q: Tensor, table_h: Tensor, table_w: Tensor, grid: tuple[int, int]
) -> Tensor:
    """Queries (B, heads, H*W, D) on an H x W grid -> additive attention bias (B, heads, H*W, H*W).

    As detectron2's `add_decomposed_rel_pos`: the unscaled query meets each axis' table, and the
    two terms broadcast over the other axis of the key.
    """
    h, w = grid
    b, n = q.shape[:2]
    q = q.reshape(b, n, h, w, -1)
    along_h = torch.einsum("bnhwd,hkd->bnhwk", q, rel_pos_table(table_h, h).to(q.dtype))
    along_w = torch.einsum("bnhwd,wld->bnhwl", q, rel_pos_table(table_w, w).to(q.dtype))
    return (along_h[..., :, None] + along_w[..., None, :]).reshape(b, n, h * w, h * w)


class Attention(nn.Module):
    """Multi-head self-attention on a (B, H, W, C) grid, with the optional relative position bias.

    Same parameters and computation as timm's `Attention` with qkv_bias (fused path); `rel_pos_side`
    > 0 adds zero-initialised tables for a grid of that side (the window, or a global block's grid).
    """

    def __init__(self, dim: int, num_heads: int, rel_pos_side: int = 0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = self.rel_pos_w = None
        if rel_pos_side > 0:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_side - 1, dim // num_heads))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_side - 1, dim // num_heads))

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        q, k, v = (
            self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        )
        bias = None
        if self.rel_pos_h is not None:
            bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(y.transpose(1, 2).reshape(b, h, w, c))


class Block(nn.Module):
    """Pre-norm transformer block on a (B, H, W, C) grid; attention global or within windows."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        drop_path: float,
        window_size: int,
        rel_pos_side: int = 0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, rel_pos_side)
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
            y = self.attn(y)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ScaleMAEViT(nn.Module):
    """Patch embedding + GSD positional embedding + blocks + final norm; no cls token."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.embed_dim, self.patch_size = cfg.embed_dim, cfg.patch_size
        self.grad_checkpointing = cfg.grad_checkpointing
        self.patch_embed = PatchEmbed(
            img_size=None,
            patch_size=cfg.patch_size,
            in_chans=3,
            embed_dim=cfg.embed_dim,
            output_fmt="NHWC",
        )
        rates = torch.linspace(
            0, cfg.drop_path, cfg.depth
        ).tolist()  # stochastic depth grows with depth
        windows = [0 if i in cfg.global_blocks else cfg.window_size for i in range(cfg.depth)]
        # ViTDet's tables: a windowed block's for its window, a global block's for the grid it was
        # trained on (detectron2 vit.py builds them for img_size // patch_size)
        sides = [(window or cfg.rel_pos_grid) if cfg.rel_pos else 0 for window in windows]
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, rates[i], windows[i], sides[i])
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def forward(self, x: Tensor, res: float | Tensor) -> Tensor:
        """Normalised images (B, 3, H, W), H and W multiples of the patch -> (B, C, H/16, W/16)."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return self.forward_with_pos(
            x, gsd_sincos_pos_embed(self.embed_dim, (h, w), res).to(x.device)
        )

    def forward_with_pos(self, x: Tensor, pos_embed: Tensor) -> Tensor:
        """Same, with the positional embedding given: (H*W, C) or (B, H*W, C). Export bakes it in
        here."""
        x = self.patch_embed(x)
        b, h, w, c = x.shape
        # The residual stream keeps the parameters' dtype (float32 when training, whatever autocast
        # makes of the attention and MLP branches), as detectron2's ViT and ScaleMAE do; casting to
        # the branches' bf16 would round every block's sum. A half-precision export keeps it half.
        stream = self.patch_embed.proj.weight.dtype
        x = x.to(stream) + pos_embed.to(stream).reshape(-1, h, w, c)
        for block in self.blocks:
            x = (
                checkpoint(block, x, use_reentrant=False)
                if self.grad_checkpointing and self.training
                else block(x)
            )
        return self.norm(x).permute(0, 3, 1, 2)
