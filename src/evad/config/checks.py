"""What each config key accepts: the keys of every section, their types and ranges.

The keys of a section are its dataclass's fields (`model:` takes `preset`, `pretrained` and any
`ModelConfig` field but `num_classes`, which comes from the dataset). A value is converted to its
field's annotation by `_coerce` (an integer where a number is expected becomes a float; YAML 1.1
reads ``1e-4`` as a string, which a number field takes) and then checked against its range in
`_CHECKS`. Every failure is a one-line `UserError` naming the source (a file or "command line"),
the dotted key and what is accepted; a misspelt key also names its close matches (`unknown`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evad.config.schema import AMP_MODES, DEVICES, EvalConfig, TrainConfig
from evad.data.config import DATA_FORMATS, DataConfig
from evad.errors import UserError
from evad.models.factory import PRESETS, ModelConfig

# ----------------------------------------------------------------------------------------------
# Schema

# The sections that are a dataclass's fields (`model` is a preset and overrides), and every top-level key.
SECTIONS: dict[str, type] = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
TOP_LEVEL = ("model", "data", "train", "eval", "output_dir")
_MODEL_OWN = {"preset": str, "pretrained": str | None}
_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"num_classes"}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _in_unit(v: float) -> bool:
    return 0.0 <= v <= 1.0


# Range checks beyond the type: dotted key -> (predicate, what is accepted).
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "train.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "train.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.accum_steps": (lambda v: v >= 1, "an integer >= 1"),
    "train.base_lr": (lambda v: v > 0, "a number > 0"),
    "train.head_lr_mult": (lambda v: v > 0, "a number > 0"),
    "train.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "train.betas": (lambda v: all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "train.warmup_fraction": (_in_unit, "a fraction in [0, 1]"),
    "train.warmup_start_factor": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "train.lr_steps": (
        lambda v: all(0 < s <= 1 for s in v) and list(v) == sorted(v),
        "increasing fractions of training in (0, 1]",
    ),
    "train.lr_gamma": (lambda v: v > 0, "a number > 0"),
    "train.clip_grad_norm": (lambda v: v is None or v > 0, "a number > 0 or null"),
    "train.amp": (lambda v: v in AMP_MODES, f"one of {', '.join(AMP_MODES)}"),
    "train.eval_every": (lambda v: v >= 1, "an integer >= 1"),
    "train.eval_after": (lambda v: v is None or v >= 0, "an integer >= 0 or null"),
    "train.checkpoint_every": (lambda v: v >= 1, "an integer >= 1"),
    "train.log_every": (lambda v: v >= 1, "an integer >= 1"),
    "train.device": (lambda v: v in DEVICES, f"one of {', '.join(DEVICES)}"),
    "train.seed": (lambda v: 0 <= v < 2**63, "an integer in [0, 2**63)"),
    "train.max_steps": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
    "eval.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "eval.keep_rate": (lambda v: v is None or 0 < v <= 1, "a number in (0, 1] or null"),
    "eval.person_threshold": (lambda v: v is None or _in_unit(v), "a number in [0, 1] or null"),
    "eval.ava_max_per_keyframe": (lambda v: v >= 0, "an integer >= 0"),
    "data.format": (lambda v: v in DATA_FORMATS, f"one of {', '.join(DATA_FORMATS)}"),
    "data.split": (lambda v: v >= 1, "a split number >= 1"),
    "data.fps": (lambda v: v > 0, "a number > 0"),
    "data.timestamp_start": (lambda v: v >= 0, "an integer >= 0"),
    "data.num_frames": (lambda v: v >= 1, "an integer >= 1"),
    "data.sampling_rate": (lambda v: v >= 0, "an integer >= 0"),
    "data.classes": (
        lambda v: v is None or (len(v) > 0 and min(v) >= 1 and len(set(v)) == len(v)),
        "a non-empty list of distinct class ids >= 1, or null",
    ),
    "data.train_short_side": (lambda v: len(v) > 0 and min(v) >= 1, "a non-empty list of sizes >= 1"),
    "data.test_short_side": (lambda v: v >= 1, "an integer >= 1"),
    "data.max_long_side": (lambda v: v >= 1, "an integer >= 1"),
    "data.flip_prob": (_in_unit, "a probability in [0, 1]"),
    "data.color_jitter": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "data.size_divisor": (lambda v: v >= 1, "an integer >= 1"),
    "data.mean": (
        lambda v: all(0 <= m <= 1 for m in v),
        "three numbers in [0, 1] (of RGB in [0, 1], not 0-255)",
    ),
    "data.std": (
        lambda v: all(0 < s <= 1 for s in v),
        "three numbers in (0, 1] (of RGB in [0, 1], not 0-255)",
    ),
    "data.train_stride": (lambda v: v >= 1, "an integer >= 1"),
    "data.val_stride": (lambda v: v >= 1, "an integer >= 1"),
    "data.num_workers": (lambda v: v >= 0, "an integer >= 0"),
    "model.preset": (lambda v: v in PRESETS, f"one of {', '.join(sorted(PRESETS))}"),
    "model.keep_rate": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "model.patch_size": (lambda v: v >= 1 and 32 % v == 0, "a divisor of 32 (the pyramid's coarsest stride)"),
    "model.mlp_ratio": (lambda v: v > 0, "a number > 0"),
    "model.decoder_mlp_ratio": (lambda v: v > 0, "a number > 0"),
    "model.drop_path_rate": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "model.decoder_drop_path": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "model.loc_dropout": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "model.keyframe_weight": (lambda v: v > 0, "a number > 0"),
    "model.person_threshold": (_in_unit, "a number in [0, 1]"),
    "model.no_object_weight": (lambda v: v >= 0, "a number >= 0"),
    "model.roi_extend": (lambda v: min(v) >= 0, "two numbers >= 0 (fractions of the box's width and height)"),
    "model.prune_layers": (lambda v: len(set(v)) == len(v), "distinct block indices"),
    "model.tap_layers": (
        lambda v: len(v) == 4 and list(v) == sorted(v),
        "4 block indices in order, one per pyramid level, finest first (a block may feed two)",
    ),
    "model.loss_weights": (
        lambda v: min(v.values()) >= 0 and any(v[k] > 0 for k in ("ce", "bbox", "giou") if k in v),
        "numbers >= 0, not all of ce, bbox and giou 0 (they are the matching costs)",
    ),
}
# Model sizes and counts that must be at least 1 (widths, heads, depths, queries, pooler outputs).
_CHECKS.update(
    (f"model.{key}", (lambda v: v >= 1, "an integer >= 1"))
    for key in (
        "embed_dim", "depth", "num_heads", "tubelet_size", "num_frames", "pretrain_img_size", "fpn_dim",
        "num_queries", "num_stages", "loc_heads", "loc_feedforward", "dim_dynamic", "pooler_resolution",
        "decoder_dim", "decoder_depth", "decoder_heads", "act_dim", "actor_pooler_resolution",
    )
)  # fmt: skip
_CHECKS.update(
    (f"model.{key}", (lambda v: v >= 0, "an integer >= 0"))
    for key in ("cls_layers", "reg_layers", "act_layers")
)


def field_type(dotted: str) -> Any:
    """Type annotation of a dotted leaf key such as "train.betas" or "model.loss_weights"."""
    section, name = dotted.split(".", 1)
    if section == "model":
        return _MODEL_OWN[name] if name in _MODEL_OWN else _hints(ModelConfig)[name]
    return _hints(SECTIONS[section])[name]


def keys_of(section: str) -> list[str]:
    """The keys a section accepts (`model`: its own two and the `ModelConfig` fields but num_classes)."""
    if section == "model":
        return sorted([*_MODEL_OWN, *_MODEL_FIELDS])
    return [f.name for f in dataclasses.fields(SECTIONS[section])]


def unknown(key: str, candidates: Sequence[str], source: str, prefix: str = "") -> UserError:
    """The error for an unknown key, naming up to three of `candidates` it may have meant.

    Args:
        key: The key as given, without `prefix`.
        candidates: The keys accepted where it was given.
        source: The file (or "command line") that gave it.
        prefix: The dotted path of the section it was given in, e.g. "train.".
    """
    key = str(key)  # YAML reads `1:` or `yes:` as a number or a boolean key
    # A key cut short names its completions first (train.warmup: warmup_fraction, not amp).
    starting = [c for c in candidates if key and c.startswith(key)]
    close = (
        starting
        + [c for c in difflib.get_close_matches(key, list(candidates), n=3, cutoff=0.6) if c not in starting]
    )[:3]
    hint = f"; did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else ""
    message = f"{source}: unknown key {prefix + key!r}{hint}"
    if prefix + key == "model.num_classes":
        message = f"{source}: 'model.num_classes' comes from the dataset (use data.classes for a subset)"
    return UserError(message)


# ----------------------------------------------------------------------------------------------
# Values


def type_name(tp: Any) -> str:
    """The annotation `tp` in words for an error message, e.g. "a list of numbers" for list[float]."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} ({', '.join(type_name(a) for a in args)})"
        return f"a list of {type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return f"a mapping of names to {type_name(typing.get_args(tp)[1]).removeprefix('a ')}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


class _BadValue(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """`value` (as YAML read it) converted to the annotation `tp`, or _BadValue."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg)
            except _BadValue:
                pass
        raise _BadValue
    if tp is type(None):
        if value is None:
            return None
        raise _BadValue
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _BadValue
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _BadValue
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                raise _BadValue from None
        else:
            raise _BadValue
        # YAML's .nan and .inf are floats; like "nan" and "inf" they would slip past the range checks
        # (every comparison with NaN is False, and min() skips a NaN that is not first).
        if math.isfinite(number):
            return number
        raise _BadValue
    if tp is str:
        if isinstance(value, str):
            return value
        raise _BadValue
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _BadValue
        args = typing.get_args(tp)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            items = [_coerce(v, args[0]) for v in value]
            return items if origin is list else tuple(items)
        if len(value) != len(args):
            raise _BadValue
        return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _BadValue
        key_type, value_type = typing.get_args(tp)
        return {_coerce(k, key_type): _coerce(v, value_type) for k, v in value.items()}
    raise _BadValue


def check_value(dotted: str, value: Any, source: str) -> Any:
    """`value` converted to the type of the dotted key and range-checked, or a `UserError` naming `source`."""
    tp = field_type(dotted)
    try:
        value = _coerce(value, tp)
    except _BadValue:
        raise UserError(f"{source}: {dotted} must be {type_name(tp)}, got {value!r}") from None
    check = _CHECKS.get(dotted)
    if check is not None and not check[0](value):
        raise UserError(f"{source}: {dotted} must be {check[1]}, got {value!r}")
    if any(abs(n) >= _INT_LIMIT for n in _integers(value)):
        raise UserError(f"{source}: {dotted} must hold integers of magnitude below 2**63, got {value!r}")
    return value


# Larger integers end in OverflowError deep inside NumPy or torch (C longs), not in a setting's check.
_INT_LIMIT = 2**63


def _integers(value: Any) -> list[int]:
    """The integers in a coerced setting: itself, or the items of its list / tuple / mapping."""
    if isinstance(value, Mapping):
        return [n for item in value.values() for n in _integers(item)]
    if isinstance(value, list | tuple):
        return [n for item in value for n in _integers(item)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []
