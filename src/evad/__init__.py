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

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from evad.errors import UserError

if TYPE_CHECKING:
    from evad.models import EVAD, PostProcess, build_criterion, create_model, get_config, list_models
    from evad.weights import load_backbone

__version__ = "0.1.0"

# The names that need torch load on first use, so that `evad --help` and the CLI's argument errors
# do not wait for torch to import.
_LAZY = {
    "EVAD": "evad.models",
    "PostProcess": "evad.models",
    "build_criterion": "evad.models",
    "create_model": "evad.models",
    "get_config": "evad.models",
    "list_models": "evad.models",
    "load_backbone": "evad.weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"evad.{name}") is not None:
        value = importlib.import_module(f"evad.{name}")  # `evad.inference.load_detector(...)`
    else:
        raise AttributeError(f"module 'evad' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
