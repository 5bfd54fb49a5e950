"""EVAD models: presets, builders and the detector."""

from evad.models.detector import EVAD
from evad.models.factory import (
    ModelConfig,
    build_criterion,
    build_model,
    build_postprocess,
    create_model,
    get_config,
    list_models,
)
from evad.models.postprocess import PostProcess

__all__ = [
    "EVAD",
    "ModelConfig",
    "PostProcess",
    "build_criterion",
    "build_model",
    "build_postprocess",
    "create_model",
    "get_config",
    "list_models",
]
