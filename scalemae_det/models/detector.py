"""The ScaleMAE ViTDet detector assembled from torchvision's Faster R-CNN components."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops import boxes as box_ops

from scalemae_det.models.configs import DetectorConfig, get_config
from scalemae_det.models.pyramid import SimpleFeaturePyramid
from scalemae_det.models.vit import ScaleMAEViT

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Gsd = float | Sequence[float] | Tensor


class ScaleMAEBackbone(nn.Module):
    """Trunk + pyramid; `out_channels` is what torchvision's heads read."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.trunk = ScaleMAEViT(cfg)
        self.pyramid = SimpleFeaturePyramid(cfg.embed_dim, cfg.pyramid_dim)
        self.out_channels = cfg.pyramid_dim

    def forward(self, x: Tensor, res: float | Tensor) -> OrderedDict[str, Tensor]:
        return self.pyramid(self.trunk(x, res))


class AlignedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's multi-level RoIAlign with `aligned=True` (ViTDet's setting; torchvision
    hard-codes False).

    Levels are pooled separately and put back in RoI order with one gather, which traces to ONNX
    without torchvision's tracing special case. The level of each RoI, and each level's scale,
    follow torchvision/ops/poolers.py (`_setup_scales`, `LevelMapper`), written out here because
    those helpers are private there:

    1. a level's scale is 2 ** round(log2(feature height / largest image height)) of the batch;
    2. levels run from k_min = -log2(first scale) to k_max = -log2(last scale);
    3. an RoI of area A goes to level floor(canonical_level + log2(sqrt(A) / canonical_scale)
       + 1e-6), clamped to [k_min, k_max] (eq. 1 of the FPN paper, Lin et al. 2017,
       arXiv:1612.03144).
    """

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        features = [x[name] for name in self.featmap_names]
        if self.scales is None:
            self.scales = self.level_scales(features, image_shapes)
        rois = torch.cat(
            [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)]
        )
        levels = self.levels(torch.cat(boxes))
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = torch.where(levels == level)[0]
            pooled.append(
                roi_align(
                    feature, rois[idx], self.output_size, scale, self.sampling_ratio, aligned=True
                )
            )
            order.append(idx)
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]

    @staticmethod
    def level_scales(features: list[Tensor], image_shapes: list[tuple[int, int]]) -> list[float]:
        """Rule 1: each level's feature size over the batch's largest image, as a power of 2."""
        if not image_shapes:
            raise ValueError("image_shapes is empty")
        height = max(h for h, _ in image_shapes)
        return [2.0 ** round(math.log2(float(f.shape[-2]) / float(height))) for f in features]

    def levels(self, boxes: Tensor) -> Tensor:
        """Rules 2 and 3: the index into `self.scales` of each xyxy box's level."""
        k_min, k_max = (round(-math.log2(self.scales[i])) for i in (0, -1))
        size = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        k = torch.floor(self.canonical_level + torch.log2(size / self.canonical_scale) + 1e-6)
        return (torch.clamp(k, k_min, k_max) - k_min).to(torch.int64)


def box_regression_loss(deltas: Tensor, targets: Tensor, beta: float, normaliser: int) -> Tensor:
    """Smooth L1 summed over the positives' deltas and divided by the number of sampled anchors or
    RoIs.

    beta 0 is plain L1, ViTDet's choice for both heads (detectron2's `smooth_l1_beta` 0 in its RPN
    and box head configs); torchvision hard-codes beta 1/9, whose quadratic zone damps the
    small corrections that small objects need. The normalisation is torchvision's and detectron2's.
    """
    return F.smooth_l1_loss(deltas, targets, beta=beta, reduction="sum") / max(normaliser, 1)


class L1RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with the box loss of `box_loss_beta` (see `box_regression_loss`)."""

    box_loss_beta: float = 0.0

    def compute_loss(
        self,
        objectness: Tensor,
        pred_bbox_deltas: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        positive, negative = self.fg_bg_sampler(labels)
        positive = torch.where(torch.cat(positive))[0]
        sampled = torch.cat([positive, torch.where(torch.cat(negative))[0]])
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], torch.cat(labels)[sampled]
        )
        box_loss = box_regression_loss(
            pred_bbox_deltas[positive],
            torch.cat(regression_targets)[positive],
            self.box_loss_beta,
            sampled.numel(),
        )
        return objectness_loss, box_loss


class L1RoIHeads(RoIHeads):
    """torchvision's RoI heads with the box loss of `box_loss_beta` (class-specific deltas, as
    ViTDet), times `box_reg_loss_weight`; `refine_steps` more passes of the head over its own
    boxes at inference (`refined`) and `train_refine_steps` in training (`training_losses`)."""

    box_loss_beta: float = 0.0
    box_reg_loss_weight: float = 1.0
    refine_steps: int = 0  # inference only: see `refined`
    train_refine_steps: int = 0  # training only: see `training_losses`

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            if self.refine_steps:
                return self.refined(features, proposals, image_shapes), {}
            return super().forward(features, proposals, image_shapes, targets)
        return [], self.training_losses(features, proposals, image_shapes, targets)

    def next_boxes(
        self, probs: Tensor, deltas: Tensor, boxes: list[Tensor], image_shapes
    ) -> list[Tensor]:
        """Each box's decoded box for its most likely real class, clipped to its image: one box
        per box, so several classes do not multiply them."""
        decoded = self.box_coder.decode(deltas, boxes)
        best = torch.argmax(probs[:, 1:], dim=1) + 1
        decoded = decoded[torch.arange(decoded.shape[0], device=decoded.device), best]
        parts = decoded.split([b.shape[0] for b in boxes])
        return [box_ops.clip_boxes_to_image(b, s) for b, s in zip(parts, image_shapes)]

    def pass_losses(
        self, logits: Tensor, deltas: Tensor, labels: Tensor, regression_targets: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Cross-entropy over the sampled boxes and the positives' box loss for their true class,
        divided by all sampled boxes (torchvision's `fastrcnn_loss` at `box_loss_beta`)."""
        positive = torch.where(labels > 0)[0]
        deltas = deltas.reshape(len(labels), -1, 4)[positive, labels[positive]]
        box = box_regression_loss(
            deltas, regression_targets[positive], self.box_loss_beta, labels.numel()
        )
        return F.cross_entropy(logits, labels), self.box_reg_loss_weight * box

    def relabel(
        self, boxes: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """The boxes of at least 0.01 px a side, labelled and given regression targets against
        the ground truth at the head's IoU threshold, as `select_training_samples` labels its
        proposals (no sampling: every box is kept, as Cascade R-CNN's later stages keep theirs)."""
        kept, gts = [], []
        for b, t in zip(boxes, targets):
            kept.append(b[box_ops.remove_small_boxes(b, 1e-2)])
            gts.append(t["boxes"])
        matched, labels = self.assign_targets_to_proposals(
            kept, gts, [t["labels"] for t in targets]
        )
        matched_boxes = [
            (g if g.numel() else torch.zeros((1, 4), dtype=b.dtype, device=b.device))[m]
            for g, m, b in zip(gts, matched, kept)
        ]
        regression_targets = self.box_coder.encode(matched_boxes, kept)
        return kept, torch.cat(labels), torch.cat(regression_targets)

    def training_losses(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes, targets
    ) -> dict[str, Tensor]:
        """The box head's losses over `train_refine_steps` + 1 passes.

        Training for the boxes `refined` feeds the head at inference (iterative box regression,
        arXiv:1505.01749, trained on its own outputs as Cascade R-CNN's stages are,
        arXiv:1712.00726, here with the one head shared by every pass):
        1. the first pass is torchvision's: sampled proposals with the ground truth among them;
        2. each later pass takes every box of the pass before, moved by that pass's deltas as
           `refined` moves them (`next_boxes`, detached: no gradient flows through a box's
           position), drops boxes under 0.01 px a side and labels the rest at the head's IoU
           threshold (`relabel`);
        3. each pass's losses are `pass_losses`, and each loss is the mean over the passes, so the
           head's losses keep their weight against the RPN's whatever the number of passes.
        With `train_refine_steps` 0 this is torchvision's training of the head (rule 1 alone).
        """
        boxes, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        labels, regression_targets = torch.cat(labels), torch.cat(regression_targets)  # rule 1
        cls_losses, box_losses = [], []
        for step in range(self.train_refine_steps + 1):
            pooled = self.box_roi_pool(features, boxes, image_shapes)
            logits, deltas = self.box_predictor(self.box_head(pooled))
            cls_loss, box_loss = self.pass_losses(logits, deltas, labels, regression_targets)
            cls_losses.append(cls_loss)
            box_losses.append(box_loss)
            if step == self.train_refine_steps:
                break
            with torch.no_grad():  # rule 2
                moved = self.next_boxes(F.softmax(logits, -1), deltas, boxes, image_shapes)
            boxes, labels, regression_targets = self.relabel(moved, targets)
        return {  # rule 3
            "loss_classifier": torch.stack(cls_losses).mean(),
            "loss_box_reg": torch.stack(box_losses).mean(),
        }

    def refined(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes
    ) -> list[dict[str, Tensor]]:
        """Detections after `refine_steps` more passes of the box head over its own boxes.

        Iterative box regression (Gidaris and Komodakis 2015, arXiv:1505.01749; the "iterative
        BBox" baseline of Cascade R-CNN, Cai and Vasconcelos 2018, arXiv:1712.00726):
        1. each pass pools the current boxes and runs the one box head on them;
        2. a proposal's next box is its decoded box for its most likely real class, clipped to
           the image (`next_boxes`);
        3. a proposal's class probabilities are the mean of every pass's softmax (as Cascade R-CNN
           averages its stages' classifiers at test time);
        4. the last pass's deltas, decoded from the boxes that pass saw, are the detections' boxes,
           then torchvision's post-processing (threshold, NMS, cap) runs once, unchanged.
        With `refine_steps` 0 this is torchvision's own inference, which `forward` runs instead.
        """
        total = None
        for step in range(self.refine_steps + 1):
            pooled = self.box_roi_pool(features, proposals, image_shapes)  # rule 1
            logits, deltas = self.box_predictor(self.box_head(pooled))
            probs = F.softmax(logits, -1)
            total = probs if total is None else total + probs  # rule 3
            if step == self.refine_steps:
                break
            proposals = self.next_boxes(probs, deltas, proposals, image_shapes)  # rule 2
        # Rule 4; the mean's log is a logit whose softmax gives the mean back.
        mean_logits = torch.log(torch.clamp(total / (self.refine_steps + 1), min=1e-12))
        boxes, scores, labels = self.postprocess_detections(
            mean_logits, deltas, proposals, image_shapes
        )
        return [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]


SIZE_DIVISIBLE = 32  # images are padded to multiples of this, the stride of p5


class TileTransform(GeneralizedRCNNTransform):
    """Normalise and pad to a multiple of SIZE_DIVISIBLE, never resize: tiles are used at their own
    GSD."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        return image, target


def float32_heads(device: torch.device):
    """Autocast off for the RPN and RoI heads: the backbone alone runs in reduced precision.

    torchvision decodes box deltas in the dtype of the regression output, so under bf16 autocast
    proposals and final boxes would come out in bfloat16 (8 significant bits: every coordinate
    above 512 px a multiple of 4), and the losses would compare bf16 boxes. detectron2 casts deltas
    to float32 before decoding for the same reason (`Box2BoxTransform.apply_deltas`); the export
    runs the heads in float32 too (export/fixed_scale.py), so training, evaluation and deployment
    see the same boxes. The heads are a few percent of the compute of a ViT-B/L.
    """
    return torch.autocast(device.type, enabled=False)


class ScaleMAEDetector(GeneralizedRCNN):
    """Faster R-CNN whose backbone also takes each image's GSD.

    `model(images, targets=None, gsd=...)`: images a list of (3, H, W) tensors in [0, 1]; gsd in
    metres per pixel as the network sees them, one float or one per image. Train mode returns the
    loss dict, eval mode torchvision-style per-image dicts (boxes xyxy, scores, labels 1..K).
    """

    def __init__(self, cfg: DetectorConfig, num_classes: int):
        # torchvision's FasterRCNN defaults, which are also ViTDet's: RPN IoU 0.7/0.3, half
        # positives,
        # NMS 0.7; RoI IoU 0.5, a quarter positives, box weights (10, 10, 5, 5).
        rpn = L1RegionProposalNetwork(
            AnchorGenerator(
                tuple((s,) for s in cfg.anchor_sizes), (cfg.aspect_ratios,) * len(cfg.anchor_sizes)
            ),
            RPNHead(cfg.pyramid_dim, len(cfg.aspect_ratios), conv_depth=2),
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=cfg.rpn_batch_per_image,
            positive_fraction=0.5,
            nms_thresh=0.7,
            pre_nms_top_n={
                "training": cfg.rpn_pre_nms_top_n[0],
                "testing": cfg.rpn_pre_nms_top_n[1],
            },
            post_nms_top_n={
                "training": cfg.rpn_post_nms_top_n[0],
                "testing": cfg.rpn_post_nms_top_n[1],
            },
        )
        roi_heads = L1RoIHeads(
            AlignedMultiScaleRoIAlign(list(SimpleFeaturePyramid.names[:4]), 7, 0),
            FastRCNNConvFCHead(
                (cfg.pyramid_dim, 7, 7),
                [cfg.pyramid_dim] * cfg.box_head_convs,
                [cfg.box_head_fc],
                norm_layer=LayerNorm2d,
            ),
            FastRCNNPredictor(cfg.box_head_fc, num_classes + 1),
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=cfg.roi_batch_per_image,
            positive_fraction=0.25,
            bbox_reg_weights=None,
            score_thresh=cfg.score_thresh,
            nms_thresh=cfg.nms_thresh,
            detections_per_img=cfg.detections_per_image,
        )
        rpn.box_loss_beta = roi_heads.box_loss_beta = cfg.box_loss_beta
        roi_heads.box_reg_loss_weight = cfg.box_reg_loss_weight
        roi_heads.train_refine_steps = cfg.train_refine_steps
        transform = TileTransform(
            min_size=0,
            max_size=0,
            image_mean=list(IMAGENET_MEAN),
            image_std=list(IMAGENET_STD),
            size_divisible=SIZE_DIVISIBLE,
        )
        super().__init__(ScaleMAEBackbone(cfg), rpn, roi_heads, transform)
        self.config = cfg
        self.num_classes = num_classes

    def res_factors(self, gsd: Gsd, batch: int, device: torch.device) -> Tensor:
        """Per-image positional-embedding factors: GSD in metres times `res_per_metre`."""
        g = torch.as_tensor(gsd, dtype=torch.float64, device=device).reshape(-1)
        if g.numel() == 1:
            g = g.expand(batch)
        if g.numel() != batch:
            raise ValueError(f"got {g.numel()} GSD values for {batch} images")
        if not bool(torch.all(g > 0)):
            raise ValueError(f"GSD must be positive, got {g.tolist()}")
        return g * self.config.res_per_metre

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None, *, gsd: Gsd
    ):
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(images, targets)
        res = self.res_factors(gsd, len(images), image_list.tensors.device)
        features = self.backbone(image_list.tensors, res)
        with float32_heads(image_list.tensors.device):
            features = OrderedDict((name, f.float()) for name, f in features.items())
            proposals, rpn_losses = self.rpn(image_list, features, targets)
            detections, roi_losses = self.roi_heads(
                features, proposals, image_list.image_sizes, targets
            )
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)


def build_detector(config_name: str, num_classes: int, **overrides) -> ScaleMAEDetector:
    """The detector for a named config (see `configs.CONFIGS`) with `num_classes` real classes."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return ScaleMAEDetector(get_config(config_name, **overrides), num_classes)
