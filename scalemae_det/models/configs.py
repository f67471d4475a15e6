"""Model configurations as plain data. A name here is what `--model` and `build_detector` take."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

# Most extra box-head passes in training (`train_refine_steps`): each costs one more run of the
# box head over every sampled RoI per step.
MAX_TRAIN_REFINE_STEPS = 3


@dataclass(frozen=True)
class DetectorConfig:
    # ScaleMAE ViT trunk
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    mlp_ratio: float = 4.0
    window_size: int = 14  # 0: global attention in every block
    global_blocks: tuple[int, ...] = ()
    drop_path: float = 0.0
    grad_checkpointing: bool = False
    res_per_metre: float = 1.0  # positional-embedding factor per metre of GSD
    # ViTDet's decomposed relative position bias in every block (see vit.py). ViTDet turns it on
    # for MAE-pretrained backbones, whose checkpoints lack it, with zero-initialised tables. Off by
    # default for every config here: ScaleMAE's checkpoints lack it too, and the recipe and the
    # bundled demo model were made without it. train.py's --rel_pos turns it on.
    rel_pos: bool = False
    # Side, in patches, of the grid the global blocks' tables are built for: the training grid
    # (ViTDet: 1024 / 16 = 64; train.py sets it from --input_size); other grids interpolate.
    rel_pos_grid: int = 64
    layer_decay: float = 0.8  # ViTDet layer-wise lr decay, used by the optimizer
    # Simple feature pyramid and heads
    pyramid_dim: int = 256
    # One anchor size per pyramid level p2..p6. ViTDet's COCO anchors are 32-512 px; most xView
    # objects are 10-40 px (a 12 px box reaches IoU 0.14 at best with a 32 px anchor, so the RPN
    # has no positive for it), hence 16-256: a 16 px anchor matches 11-23 px boxes at IoU 0.5.
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    box_head_convs: int = 4
    box_head_fc: int = 1024
    rpn_batch_per_image: int = 256
    roi_batch_per_image: int = 512
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000)  # (train, test), per level and image
    rpn_post_nms_top_n: tuple[int, int] = (
        1000,
        1000,
    )  # per image; ViTDet's (torchvision's default is 2000 in training)
    box_loss_beta: float = 0.0  # smooth-L1 beta of both heads' box losses; 0: L1, as ViTDet
    # Factor on the box head's regression loss (the RPN's stays 1): detectron2's
    # MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT (detectron2/config/defaults.py), 1.0 there and here.
    # The loss is divided by all sampled RoIs, positives or not (see detector.py), so with few
    # objects per image the positives' regression is a small share of the loss; this moves it
    # without moving the sampling (roi_batch_per_image).
    box_reg_loss_weight: float = 1.0
    # More passes of the box head over its own boxes in training, each with its own loss (see
    # detector.py, L1RoIHeads.training_losses): trains the head for the boxes that export
    # --refine-boxes feeds it. Not in ViTDet, whose box head runs once; 0 (torchvision's training)
    # by default. docs/benchmarks-real.md measured 1 and found no gain.
    train_refine_steps: int = 0
    detections_per_image: int = 300  # satellite tiles hold many objects
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        if len(self.anchor_sizes) != 5 or not all(s > 0 for s in self.anchor_sizes):
            raise ValueError(
                "anchor_sizes needs 5 positive sizes, one per level p2..p6, got "
                f"{self.anchor_sizes}"
            )
        if self.rel_pos_grid < 1:
            raise ValueError(f"rel_pos_grid must be at least 1 patch, got {self.rel_pos_grid}")
        if not self.box_reg_loss_weight > 0:
            raise ValueError(
                f"box_reg_loss_weight must be positive, got {self.box_reg_loss_weight}"
            )
        if not 0 <= self.train_refine_steps <= MAX_TRAIN_REFINE_STEPS:
            raise ValueError(
                f"train_refine_steps must be 0-{MAX_TRAIN_REFINE_STEPS}, got "
                f"{self.train_refine_steps}"
            )

    def with_overrides(self, **overrides) -> DetectorConfig:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        return replace(self, **overrides)


CONFIGS: dict[str, DetectorConfig] = {
    # The released ScaleMAE weights (bair-climate-initiative/scale-mae, mae/models_vit.py) with the
    # ViTDet settings of Li et al., "Exploring Plain Vision Transformer Backbones for Object
    # Detection", ECCV 2022 (detectron2
    # projects/ViTDet/configs/COCO/mask_rcnn_vitdet_{l,b}_100ep.py), except the anchors (see
    # anchor_sizes).
    "vit_large_patch16": DetectorConfig(
        name="vit_large_patch16",
        embed_dim=1024,
        depth=24,
        num_heads=16,
        window_size=14,
        global_blocks=(5, 11, 17, 23),
        drop_path=0.4,
        layer_decay=0.8,
    ),
    "vit_base_patch16": DetectorConfig(
        name="vit_base_patch16",
        embed_dim=768,
        depth=12,
        num_heads=12,
        window_size=14,
        global_blocks=(2, 5, 8, 11),
        drop_path=0.1,
        layer_decay=0.7,
    ),
    # For tests and the CPU-trained demo model: a slimmer pyramid and box head (the RoI convs
    # dominate CPU time: 4 convs at 128 channels cost 5x this) keep CPU training to minutes.
    "vit_tiny_patch16": DetectorConfig(
        name="vit_tiny_patch16",
        embed_dim=192,
        depth=4,
        num_heads=3,
        window_size=8,
        global_blocks=(1, 3),
        drop_path=0.0,
        layer_decay=0.9,
        pyramid_dim=64,
        box_head_convs=2,
        box_head_fc=256,
        rpn_batch_per_image=128,
        roi_batch_per_image=64,
        rpn_pre_nms_top_n=(1000, 500),
        rpn_post_nms_top_n=(500, 300),
    ),
}


def get_config(name: str, **overrides) -> DetectorConfig:
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; choose from {', '.join(CONFIGS)}")
    return CONFIGS[name].with_overrides(**overrides)
