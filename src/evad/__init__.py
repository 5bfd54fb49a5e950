"""evad: efficient spatio-temporal video action detection (EVAD, Chen et al., ICCV 2023).

Quick start::

    import torch, evad
    model = evad.create_model("vit-b", num_classes=80).eval()  # keep rate 0.7 by default
    with torch.no_grad():
        out = model(torch.randn(1, 3, 16, 224, 224), keep_rate=0.7)
    detections = evad.PostProcess()(out)                    # boxes, person and action scores
    vit = evad.load_backbone("videomae-base/")              # a VideoMAE / HF / EVAD backbone

Trained models with their classes and input settings: `evad.inference.load_detector`. A bad file
or setting raises `evad.UserError`, whose message names the file and the problem.
"""

from evad.errors import UserError
from evad.models import EVAD, PostProcess, build_criterion, create_model, get_config, list_models
from evad.weights import load_backbone

__version__ = "0.1.0"

__all__ = [
    "EVAD",
    "PostProcess",
    "UserError",
    "__version__",
    "build_criterion",
    "create_model",
    "get_config",
    "list_models",
    "load_backbone",
]
