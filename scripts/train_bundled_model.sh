#!/usr/bin/env bash
# Rebuilds scalemae_det/assets/vit_tiny_synthetic.pth, the demo's bundled model, from generated chips.
# About 15 minutes on 2 CPU cores (one training thread plus one data worker).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/scalemae-det-bundle}
.venv/bin/scalemae-det synth-chips --out "$work/train" --count 1600 --seed 1 --gsd 0.4 --gsd-max 0.6
.venv/bin/scalemae-det synth-chips --out "$work/val" --count 100 --seed 2 --gsd 0.5
OMP_NUM_THREADS=1 .venv/bin/python train.py \
    --train_image_dir "$work/train" --train_label_file "$work/train/labels.json" \
    --val_image_dir "$work/val" --val_label_file "$work/val/labels.json" \
    --model vit_tiny_patch16 --input_size 256 --scale_range 0.8 1.25 --batch_size 4 \
    --learning_rate 3e-4 --num_epochs 3 --warmup_steps 100 --weight_decay 0.05 \
    --eval_every 1 --save_every 200 --device cpu --num_workers 1 --seed 0 \
    --save_checkpoint_path "$work/run/checkpoint.pth" --resume auto
.venv/bin/python scripts/slim_checkpoint.py "$work/run/checkpoint.pth" scalemae_det/assets/vit_tiny_synthetic.pth
