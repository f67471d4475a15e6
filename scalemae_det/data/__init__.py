"""Datasets, augmentation and dataset conversion.

Modules are imported directly (`scalemae_det.data.coco`, `.transforms`, `.xview`); this package
imports nothing so that the CLI's `prepare-xview` does not pull in torch.
"""
