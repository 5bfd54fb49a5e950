"""Training and evaluation loops (DETR-style plain functions), checkpoints, optimisation, DDP."""
