"""The detector at one GSD, tile size and batch size: the module that every exporter traces.

Why this shape of graph:
- The GSD positional embedding is computed once, here, and held as a buffer, so the exported
  graph has it as a constant and no sin/cos of the GSD is left to compute (or to lose precision)
  at run time.
- The backbone runs once on the whole batch; the RPN, RoI heads and post-processing run per
  image in a Python loop over the fixed batch, which tracing unrolls. torchvision's batched R-CNN
  post-processing does not survive ONNX export at batch > 1 (pytorch/vision #8937, #2311, and
  #2309: an image without detections breaks its neighbours); one batch-1 head per image has
  none of those data-dependent batch shapes.
- Each image's detections are padded with zero rows to `max_detections` so the outputs are
  fixed-size tensors: boxes (B, K, 4), scores (B, K), labels (B, K), num_detections (B,).
- The score threshold is a buffer, `score_threshold`, which the RoI heads compare scores with: in
  the graph it is an initializer of that name (THRESHOLD_INITIALIZER), so the parity check can run
  the very graph it validates at a lower threshold (ONNX Runtime's `add_initializer` overrides it)
  and always have detections to compare, even for a model whose scores stay under the threshold.
- Half precision (`half=True`) covers the backbone only, on a copy of it: the ViT and the
  pyramid are most of the compute and are what ViTs are routinely run at in fp16, while the RPN
  and box heads, box decoding, RoIAlign and NMS stay float32, where pixel coordinates of
  hundreds need more than fp16's 11 bits. LayerNorms inside the backbone compute in float32.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from scalemae_det.base.metadata import THRESHOLD_INITIALIZER
from scalemae_det.models.detector import IMAGENET_MEAN, IMAGENET_STD, ScaleMAEDetector
from scalemae_det.models.pos_embed import gsd_sincos_pos_embed


def set_postprocess(
    model: ScaleMAEDetector,
    score_threshold: float | Tensor,
    max_detections: int,
    refine_boxes: int = 0,
) -> None:
    """Give the model's RoI heads the export's threshold, detection cap and extra box-head passes
    (models/detector.py, L1RoIHeads.refined); the PyTorch reference uses them too."""
    model.roi_heads.score_thresh = (
        score_threshold if isinstance(score_threshold, Tensor) else float(score_threshold)
    )
    model.roi_heads.detections_per_img = int(max_detections)
    model.roi_heads.refine_steps = int(refine_boxes)


def fixed_pos_embed(model: ScaleMAEDetector, gsd: float, tile: int) -> Tensor:
    """The (grid*grid, D) embedding the model computes for `gsd` on a tile x tile input."""
    cfg = model.config
    grid = tile // cfg.patch_size
    return gsd_sincos_pos_embed(cfg.embed_dim, (grid, grid), gsd * cfg.res_per_metre)


def _float32_in_out(module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(x.float() for x in inputs)


def _half_out(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
    return output.half()


def half_with_float32_norms(module: nn.Module) -> nn.Module:
    """A half-precision copy of `module` whose LayerNorms (nn.LayerNorm and subclasses) run in
    float32."""
    module = copy.deepcopy(module).half()
    for norm in module.modules():
        if isinstance(norm, nn.LayerNorm):
            norm.float()
            norm.register_forward_pre_hook(_float32_in_out)
            norm.register_forward_hook(_half_out)
    return module


class FixedScaleBackbone(nn.Module):
    """images (B, 3, T, T) in [0, 1] -> pyramid features (float32), normalising inside.

    A module of its own so that its nodes carry one name scope (`/features/...`) in the graph.
    """

    def __init__(self, model: ScaleMAEDetector, gsd: float, tile: int, half: bool = False):
        super().__init__()
        trunk, pyramid = model.backbone.trunk, model.backbone.pyramid
        self.trunk = half_with_float32_norms(trunk) if half else trunk
        self.pyramid = half_with_float32_norms(pyramid) if half else pyramid
        self.dtype = torch.float16 if half else torch.float32
        self.register_buffer("pos_embed", fixed_pos_embed(model, gsd, tile))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = ((images - self.mean) / self.std).to(self.dtype)
        features = self.pyramid(self.trunk.forward_with_pos(x, self.pos_embed))
        return {name: f.float() for name, f in features.items()}


class FixedScaleDetector(nn.Module):
    """images (B, 3, T, T) in [0, 1] -> boxes, scores, labels, num_detections (see the module doc).

    Shares its heads (and, in float32, its backbone) with `model`, and sets the model's score
    threshold (to its own `score_threshold` buffer: changing the buffer changes both), detection
    cap and extra box-head passes.
    """

    def __init__(
        self,
        model: ScaleMAEDetector,
        gsd: float,
        tile: int,
        batch: int,
        max_detections: int,
        score_threshold: float,
        half: bool = False,
        refine_boxes: int = 0,
    ):
        super().__init__()
        self.register_buffer(THRESHOLD_INITIALIZER, torch.tensor(float(score_threshold)))
        set_postprocess(
            model, getattr(self, THRESHOLD_INITIALIZER), max_detections, refine_boxes
        )  # shared: the heads read the buffer
        self.features = FixedScaleBackbone(model, gsd, tile, half)
        self.rpn, self.roi_heads = model.rpn, model.roi_heads
        self.tile, self.batch, self.max_detections = tile, batch, max_detections

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        expected = (self.batch, 3, self.tile, self.tile)
        if tuple(images.shape) != expected:
            raise ValueError(f"expected images of shape {expected}, got {tuple(images.shape)}")
        features = self.features(images)
        per_image = [
            self._detect({k: v[i : i + 1] for k, v in features.items()}, images[i : i + 1])
            for i in range(self.batch)
        ]
        return tuple(torch.stack(parts) for parts in zip(*per_image))

    def _detect(
        self, features: dict[str, Tensor], image: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        sizes = [(self.tile, self.tile)]
        proposals, _ = self.rpn(ImageList(image, sizes), features)
        (det,), _ = self.roi_heads(features, proposals, sizes)
        k = self.max_detections
        # Concatenating K zero rows and keeping the first K pads to a fixed size with static shapes.
        boxes = torch.cat([det["boxes"], det["boxes"].new_zeros(k, 4)])[:k]
        scores = torch.cat([det["scores"], det["scores"].new_zeros(k)])[:k]
        labels = torch.cat([det["labels"], det["labels"].new_zeros(k)])[:k]
        count = torch._shape_as_tensor(det["scores"])[
            0
        ]  # a graph value when tracing, not a constant
        return boxes, scores, labels, count
