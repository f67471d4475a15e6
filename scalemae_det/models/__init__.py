"""The detector: ScaleMAE ViT trunk -> simple feature pyramid -> torchvision Faster R-CNN heads."""
