"""Training and evaluation configuration: dataclasses, YAML files and dotted overrides.

This is the only package that reads evad's YAML configs (the sections' dataclasses live beside what
they configure; `evad.weights.official_config` reads the official code's own YAML). A config file
has five top-level keys, each optional (defaults: ViT-B, SPEC section 6)::

    _base_: ava_vit-b_16x4_kr0.7.yaml   # inherit, relative to this file; this file wins
    model: {preset: vit-b, keep_rate: 0.7, keyframe_weight: 4}   # any ModelConfig field
    data: {format: ava, root: data/ava, ...}                     # evad.data.config.DataConfig
    train: {epochs: 12, batch_size: 2, base_lr: 2.5e-5, ...}     # TrainConfig
    eval: {batch_size: 4, keep_rate: null}                       # EvalConfig
    output_dir: output/ava_vit-b_kr0.7

and the command line adds ``train.epochs=3 model.keep_rate=0.6 data.classes=[1,2]``, each value
read as YAML, except that a string setting (a path, a template, ``output_dir``) takes its text as
written. Every key and value is checked against the dataclass fields: an unknown key or a
value of the wrong type is a `UserError` naming the file (or "command line"), the dotted key and,
for a misspelt key, the close matches. A file must be UTF-8 text (an empty one is logged as a
warning), and a key given twice in one mapping is refused with its line (YAML would keep the
last). `num_classes` is not a config value: it comes from the dataset (`data.classes` picks a
subset).

The package's modules:

- `schema`: the dataclasses (`Config`, `ModelSection`, `TrainConfig`, `EvalConfig`).
- `checks`: the keys of each section and the types and ranges of their values.
- `files`: strict YAML reading, `_base_` inheritance, the packaged configs.
- `overrides`: the command line's dotted ``key=value`` overrides.
- `build`: the checked `Config`, with the options that must fit together (`load_config`,
  `config_from_dict`).

Example:
    >>> cfg = load_config("configs/ava_vit-b_16x4_kr0.7.yaml", ["train.epochs=1"])  # doctest: +SKIP
    >>> cfg.model.model_config(num_classes=80).keep_rate  # doctest: +SKIP
    0.7
"""

from evad.config.build import config_from_dict, load_config
from evad.config.files import resolve_config_path
from evad.config.overrides import COMMAND_LINE, apply_overrides
from evad.config.schema import AMP_MODES, DEVICES, Config, EvalConfig, ModelSection, TrainConfig

__all__ = [
    "AMP_MODES",
    "COMMAND_LINE",
    "DEVICES",
    "Config",
    "EvalConfig",
    "ModelSection",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "resolve_config_path",
]
