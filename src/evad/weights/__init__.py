"""Pretrained weights: reading VideoMAE, Hugging Face, official EVAD and evad checkpoints safely,
converting them to evad's names, and evad's own safetensors format (EVAD issue 6).

- `load_pretrained(model, path)`: load any supported checkpoint into a model, with a report.
- `load_backbone(path)`: the `VideoViT` a checkpoint describes, with its weights.
- `convert_checkpoint(src, dst, ...)`: what `evad convert` runs.
- `read_official_config(path)`: an official EVAD YAML config as a `ModelConfig`.
- `official_to_evad` / `evad_to_official`: the official key layout, both ways.
"""

from evad.weights.convert import convert_checkpoint
from evad.weights.evad_format import save_weights
from evad.weights.loading import LoadReport, load_backbone, load_pretrained
from evad.weights.official import evad_to_official, official_to_evad
from evad.weights.official_config import parse_official_config, read_official_config
from evad.weights.reading import read_checkpoint

__all__ = [
    "LoadReport",
    "convert_checkpoint",
    "evad_to_official",
    "load_backbone",
    "load_pretrained",
    "official_to_evad",
    "parse_official_config",
    "read_checkpoint",
    "read_official_config",
    "save_weights",
]
