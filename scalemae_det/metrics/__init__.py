"""Detection metrics: COCO AP and the xView metric (`coco_ap`), scene-level truth and scoring
(`scenes`)."""
