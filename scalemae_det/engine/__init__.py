"""The training engine behind `train.py` and `scalemae-det evaluate`.

Modules are imported directly (`scalemae_det.engine.optim`, `.loop`, ...); this package imports
nothing so that the CLI stays torch-free until a command runs.
"""
