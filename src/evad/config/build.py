"""Building a checked `Config` from an annotated tree: `load_config` and `config_from_dict`.

Each section's keys and values are checked (`evad.config.checks`); a mapping-valued field given key
by key (``model.loss_weights.ce=2``) is merged onto the preset's. Then come the options that are
each valid but must fit together: the model's widths and head counts, its layer indices against
its depth, the data's clip length and padding against the model, and the two AVA evaluation
options.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evad.config.checks import SECTIONS, TOP_LEVEL, check_value, field_type, keys_of, type_name, unknown
from evad.config.files import Sourced, annotate, read_yaml, resolve_config_path
from evad.config.overrides import COMMAND_LINE, apply_overrides
from evad.config.schema import Config, EvalConfig, ModelSection, TrainConfig
from evad.data.config import DataConfig
from evad.errors import UserError
from evad.models.factory import PRESETS, ModelConfig


def _section_values(name: str, raw: Any, defaults: Any) -> dict[str, Any]:
    """Checked values of one section; `raw` maps keys to Sourced leaves or leaf mappings.

    `defaults` is the object whose attributes a mapping-valued field given key by key is merged
    onto (the preset's `ModelConfig` for `model.loss_weights`).
    """
    if raw is None:
        return {}
    if isinstance(raw, Sourced):
        if raw.value is None:
            return {}
        raise UserError(f"{raw.source}: {name} must be a mapping of keys, got {raw.value!r}")
    allowed = keys_of(name)
    values = {}
    for key, item in raw.items():
        if key not in allowed:
            raise unknown(key, allowed, _first_source(item), prefix=f"{name}.")
        dotted = f"{name}.{key}"
        if isinstance(item, Sourced):
            values[key] = check_value(dotted, item.value, item.source)
        else:
            values[key] = _mapping_value(dotted, item, getattr(defaults, key, None))
    return values


def _first_source(item: Any) -> str:
    """The source of a leaf, or of the first leaf below a mapping."""
    if isinstance(item, Sourced):
        return item.source
    if isinstance(item, dict):
        for value in item.values():
            return _first_source(value)
    return COMMAND_LINE


def _mapping_value(dotted: str, item: dict[str, Any], default: Any) -> dict[str, Any]:
    """A mapping-typed field given key by key: merged onto its default, keys checked."""
    tp = field_type(dotted)
    source = _first_source(item)
    if typing.get_origin(tp) is not dict or not isinstance(default, dict):
        raise UserError(f"{source}: {dotted} must be {type_name(tp)}, got a mapping")
    merged = dict(default)
    for key, leaf in item.items():
        if key not in merged:
            raise unknown(key, list(merged), _first_source(leaf), prefix=f"{dotted}.")
        if not isinstance(leaf, Sourced):
            raise UserError(f"{_first_source(leaf)}: {dotted}.{key} must be a number, got a mapping")
        merged[key] = leaf.value
    return check_value(dotted, merged, source)


def _build(raw: dict[str, Any]) -> Config:
    for key, value in raw.items():
        if key not in TOP_LEVEL:
            raise unknown(key, TOP_LEVEL, _first_source(value))
    model_raw = raw.get("model")
    preset = ModelSection.preset
    if isinstance(model_raw, dict) and isinstance(model_raw.get("preset"), Sourced):
        preset = check_value("model.preset", model_raw["preset"].value, model_raw["preset"].source)
    model_values = _section_values("model", model_raw, PRESETS[preset])
    model_values.pop("preset", None)
    pretrained = model_values.pop("pretrained", None)
    model = ModelSection(preset, pretrained, model_values)
    sections = {name: _section_values(name, raw.get(name), None) for name in SECTIONS}
    output = raw.get("output_dir")
    output_dir = "output" if output is None else _check_output_dir(output)
    try:
        data = DataConfig(**sections["data"])
    except ValueError as err:
        raise UserError(f"data: {err}") from None
    model_cfg = dataclasses.replace(PRESETS[preset], **model_values)
    _check_model(model_cfg)
    _check_data_fits_model(data, model_cfg)
    evaluation = EvalConfig(**sections["eval"])
    if evaluation.ava_input_order and evaluation.ava_max_per_keyframe:
        raise UserError(
            "eval.ava_input_order=true (EVAD's own evaluation) keeps every detection: it needs "
            f"eval.ava_max_per_keyframe=0, not {evaluation.ava_max_per_keyframe}"
        )
    return Config(model, data, TrainConfig(**sections["train"]), evaluation, output_dir)


# (width, heads) pairs of the model: each width is split evenly among its heads.
_SPLIT_WIDTHS = (("embed_dim", "num_heads"), ("fpn_dim", "loc_heads"), ("decoder_dim", "decoder_heads"))


def _check_model(model: ModelConfig) -> None:
    """UserError for model options that are each valid but do not fit together."""
    for width, heads in _SPLIT_WIDTHS:
        if getattr(model, width) % getattr(model, heads):
            raise UserError(
                f"model.{heads}={getattr(model, heads)} must divide model.{width}={getattr(model, width)}"
            )
    if model.num_frames % model.tubelet_size:
        raise UserError(
            f"model.tubelet_size={model.tubelet_size} must divide model.num_frames={model.num_frames}"
        )
    for key in ("prune_layers", "tap_layers"):
        layers = list(getattr(model, key))
        if any(not 0 <= i < model.depth for i in layers):
            raise UserError(
                f"model.{key}={layers} must be blocks of model.depth={model.depth}: 0 to {model.depth - 1}"
            )


def _check_data_fits_model(data: DataConfig, model: ModelConfig) -> None:
    """UserError unless the clips the data section makes are clips the model takes."""
    if data.num_frames != model.num_frames:
        raise UserError(
            f"data.num_frames={data.num_frames} does not match the model's input, "
            f"model.num_frames={model.num_frames} frames"
        )
    if data.size_divisor % model.patch_size:
        raise UserError(
            f"data.size_divisor={data.size_divisor} must be a multiple of the model's patch size "
            f"{model.patch_size}: clips are padded to it"
        )


def _check_output_dir(item: Any) -> str:
    if isinstance(item, Sourced) and isinstance(item.value, str) and item.value:
        return item.value
    source = item.source if isinstance(item, Sourced) else COMMAND_LINE
    value = item.value if isinstance(item, Sourced) else item
    raise UserError(f"{source}: output_dir must be a non-empty string, got {value!r}")


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a config file (with its `_base_` chain) and apply dotted overrides.

    Args:
        path: YAML file, the name of a config shipped with the package (``synthetic_tiny`` for
            ``evad/configs/synthetic_tiny.yaml``, also the repository's ``configs/``), or None to
            start from the defaults.
        overrides: ``section.key=value`` strings; values are read with `yaml.safe_load`.

    Raises:
        UserError: For an unreadable or non-UTF-8 file, invalid YAML, a duplicate key, an
            unknown key or a value of the wrong type or range, naming the file (or "command line"),
            the line where it applies and the dotted key.
    """
    raw = read_yaml(resolve_config_path(path), ()) if path is not None else {}
    return _build(apply_overrides(raw, overrides))


def config_from_dict(data: Mapping[str, Any], source: str, overrides: Sequence[str] = ()) -> Config:
    """Rebuild a `Config` from `Config.to_dict()` output (e.g. stored in a checkpoint)."""
    if not isinstance(data, Mapping):
        raise UserError(f"{source}: the stored config is not a mapping")
    return _build(apply_overrides(annotate(dict(data), source), overrides))
