"""Training and evaluation configuration: dataclasses, YAML files and dotted overrides.

This is the only module that reads evad's YAML configs (the sections' dataclasses live beside what
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

Example:
    >>> cfg = load_config("configs/ava_vit-b_16x4_kr0.7.yaml", ["train.epochs=1"])  # doctest: +SKIP
    >>> cfg.model.model_config(num_classes=80).keep_rate  # doctest: +SKIP
    0.7
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evad.data.config import DATA_FORMATS, DataConfig
from evad.errors import UserError
from evad.fileio import write_atomically
from evad.models.factory import PRESETS, ModelConfig, get_config

logger = logging.getLogger(__name__)

AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
COMMAND_LINE = "command line"


@dataclass
class ModelSection:
    """The `model:` section: a preset plus any `ModelConfig` field as an override.

    Attributes:
        preset: Name in `evad.models.factory.PRESETS` ("tiny", "vit-s", "vit-b", "vit-l", "vit-h").
        pretrained: Optional weights to start from: an evad checkpoint or a state dict with evad's
            parameter names (loaded non-strictly; the action classifier is skipped when its class
            count differs).
        overrides: `ModelConfig` fields that differ from the preset, e.g. {"keep_rate": 0.6}.
    """

    preset: str = "vit-b"
    pretrained: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def model_config(self, num_classes: int) -> ModelConfig:
        """The full `ModelConfig` for a dataset with `num_classes` action classes."""
        return get_config(self.preset, num_classes, **self.overrides)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "pretrained": self.pretrained, **_plain(self.overrides)}


@dataclass
class TrainConfig:
    """The `train:` section (defaults: the paper's ViT-B recipe, SPEC section 6).

    Attributes:
        epochs: Passes over the training set.
        batch_size: Clips per process and micro-batch (official: 16 over 8 GPUs = 2).
        accum_steps: Micro-batches per optimizer step (gradient accumulation). The box losses of
            each are divided by the whole step's box count, so the gradient is that of one
            batch on accum_steps times the processes.
        base_lr: AdamW learning rate of the backbone, FPN and initial proposals.
        head_lr_mult: Learning-rate multiplier of the head (localization stages, decoder).
        weight_decay: AdamW weight decay; 1-D parameters, biases and tokens get none.
        betas: AdamW betas.
        warmup_fraction: Fraction of all optimizer steps with linear warm-up (2 of 12 epochs).
        warmup_start_factor: LR factor at step 0 of the warm-up (2.5e-6 / 2.5e-5).
        lr_steps: Fractions of training after which the LR is multiplied by `lr_gamma`
            (epochs 5 and 8 of 12).
        lr_gamma: Step decay factor.
        clip_grad_norm: Max gradient norm, or None for no clipping (the paper clips nothing).
        amp: Mixed precision on CUDA: "none", "bf16" or "fp16" (with a gradient scaler); ignored
            on CPU.
        eval_every: Evaluate every this many epochs (and after the last one).
        eval_after: Also evaluate after every epoch past this one; None: only as `eval_every`
            says. The official AVA runs evaluate epochs 5 (`eval_every`), 6, 7, ... 12
            (TEST_AFTER_EPOCH 5).
        checkpoint_every: Write `last.pt` every this many epochs (and after the last one).
        log_every: Write a `log.jsonl` line every this many optimizer steps.
        seed: Seeds the initial weights and, with the epoch, every epoch's randomness.
        device: "auto" (CUDA if available), "cpu" or "cuda".
        max_steps: Stop after this many optimizer steps (smoke runs); the LR schedule still spans
            `epochs`, and a run resumed with a larger value (or none) goes on where it stopped,
            inside the cut epoch.
        tensorboard: Also write TensorBoard scalars (when `tensorboard` is installed).
    """

    epochs: int = 12
    batch_size: int = 2
    accum_steps: int = 1
    base_lr: float = 2.5e-5
    head_lr_mult: float = 8.0
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_fraction: float = 2 / 12
    warmup_start_factor: float = 0.1
    lr_steps: list[float] = field(default_factory=lambda: [5 / 12, 8 / 12])
    lr_gamma: float = 0.1
    clip_grad_norm: float | None = None
    amp: str = "none"
    eval_every: int = 1
    eval_after: int | None = None
    checkpoint_every: int = 1
    log_every: int = 20
    seed: int = 0
    device: str = "auto"
    max_steps: int | None = None
    tensorboard: bool = True


@dataclass
class EvalConfig:
    """The `eval:` section.

    Attributes:
        batch_size: Clips per process and batch at evaluation.
        keep_rate: Token keep rate at evaluation; None uses the model's.
        person_threshold: Minimum person probability of a detection; None uses the model's (0.7).
        ava_max_per_keyframe: AVA frame-mAP keeps this many detections per keyframe, best first:
            50 as the ActivityNet scorer (SPEC section 10); 0 keeps all.
        ava_input_order: AVA frame-mAP matches each keyframe's detections in the model's query
            order, not by descending score; needs `ava_max_per_keyframe` 0. Both together are
            the evaluation in EVAD's own code, which made the paper's numbers.
    """

    batch_size: int = 4
    keep_rate: float | None = None
    person_threshold: float | None = None
    ava_max_per_keyframe: int = 50
    ava_input_order: bool = False


@dataclass
class Config:
    """A whole training / evaluation configuration."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "output"

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists and scalars; `config_from_dict` reads it back."""
        return {
            "model": self.model.to_dict(),
            "data": _plain(dataclasses.asdict(self.data)),
            "train": _plain(dataclasses.asdict(self.train)),
            "eval": _plain(dataclasses.asdict(self.eval)),
            "output_dir": self.output_dir,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write the config as YAML, atomically."""

        def dump(tmp: str) -> None:
            Path(tmp).write_text(self.to_yaml(), encoding="utf-8")

        write_atomically(path, dump)


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML and JSON friendly)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Schema

_SECTIONS: dict[str, type] = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
_TOP_LEVEL = ("model", "data", "train", "eval", "output_dir")
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


def _field_type(dotted: str) -> Any:
    """Type annotation of a dotted leaf key such as "train.betas" or "model.loss_weights"."""
    section, name = dotted.split(".", 1)
    if section == "model":
        return _MODEL_OWN[name] if name in _MODEL_OWN else _hints(ModelConfig)[name]
    return _hints(_SECTIONS[section])[name]


def _keys_of(section: str) -> list[str]:
    if section == "model":
        return sorted([*_MODEL_OWN, *_MODEL_FIELDS])
    return [f.name for f in dataclasses.fields(_SECTIONS[section])]


def _unknown(key: str, candidates: Sequence[str], source: str, prefix: str = "") -> UserError:
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


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return f"a mapping of names to {_type_name(typing.get_args(tp)[1]).removeprefix('a ')}s"
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
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                raise _BadValue from None
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


def _check_value(dotted: str, value: Any, source: str) -> Any:
    tp = _field_type(dotted)
    try:
        value = _coerce(value, tp)
    except _BadValue:
        raise UserError(f"{source}: {dotted} must be {_type_name(tp)}, got {value!r}") from None
    check = _CHECKS.get(dotted)
    if check is not None and not check[0](value):
        raise UserError(f"{source}: {dotted} must be {check[1]}, got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------
# Files and overrides


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one YAML mapping (lines count from 1)."""

    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} on line {line} (first on line {first_line})")
        self.key = key
        self.line = line
        self.first_line = first_line


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (safe_load keeps the last).

    Keys that a ``<<`` merge brings in may still be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping of `node`, or `_DuplicateKey` for the second occurrence of a key.

        Args:
            node: The mapping node.
            deep: Whether to construct nested values at once (as `yaml.SafeLoader`).
        """
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, line, seen[key])
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    pass
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str) -> Any:
    """`text` read as YAML with the safe loader, refusing duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)  # safe: _StrictLoader is a yaml.SafeLoader


def _yaml_error(path: Path, text: str, err: yaml.YAMLError) -> UserError:
    """A one-line error naming the file and the line of a YAML problem."""
    if isinstance(err, _DuplicateKey):
        return UserError(f"{path}:{err.line}: duplicate key {err.key!r} (first on line {err.first_line})")
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        what = ", ".join(part for part in (err.context, err.problem) if part)
        start = err.context_mark
        if start is not None and start.line != err.problem_mark.line:
            what += f" (from line {start.line + 1})"
        return UserError(f"{path}:{err.problem_mark.line + 1}: not valid YAML: {what}")
    if isinstance(err, yaml.reader.ReaderError) and isinstance(err.character, int):
        line = text.count("\n", 0, err.position) + 1
        return UserError(f"{path}:{line}: not valid YAML: character #x{err.character:04x}: {err.reason}")
    return UserError(f"{path}: not valid YAML: {' '.join(str(err).split())}")


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The file's mapping with its `_base_` files merged underneath (paths relative to the file)."""
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise UserError(f"{path}: _base_ inheritance loops ({cycle})")
    try:
        raw = path.read_bytes()
    except OSError as err:
        base_of = f" (the _base_ of {chain[-1]})" if chain else ""
        raise UserError(f"{path}: cannot read config{base_of}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start}); save the config as UTF-8"
        ) from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as err:
        raise _yaml_error(path, text, err) from None
    if data is None:  # nothing but blanks and comments: allowed, but later errors would hide why
        if os.environ.get("RANK", "0") == "0":  # once per torchrun job
            logger.warning(
                "%s: the config file is empty; every setting is the default or from the command line", path
            )
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of sections, got {type(data).__name__}")
    bases = data.pop("_base_", None)
    if bases is None:
        return _annotate(data, str(path))
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{path}: _base_ must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _merge(merged, _read_yaml((path.parent / base).resolve(), (*chain, path)))
    return _merge(merged, _annotate(data, str(path)))


class _Sourced:
    """A leaf value with the file (or "command line") it came from."""

    def __init__(self, value: Any, source: str) -> None:
        self.value = value
        self.source = source


def _annotate(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Wrap every leaf (scalars, lists, and the values of mapping-typed fields) with its source."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in ("model", "data", "train", "eval"):
            section = {}
            for name, item in value.items():
                if isinstance(item, dict):  # a mapping-valued field (model.loss_weights)
                    section[name] = {k: _Sourced(v, source) for k, v in item.items()}
                else:
                    section[name] = _Sourced(item, source)
            out[key] = section
        else:
            out[key] = _Sourced(value, source)
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_text(parts: Sequence[str]) -> bool:
    """Whether the dotted key names a string setting (a path, a template, a name)."""
    if list(parts) == ["output_dir"]:
        return True
    if len(parts) != 2 or parts[0] not in ("model", *_SECTIONS):
        return False
    try:
        tp = _field_type(".".join(parts))
    except KeyError:  # an unknown key: reported with its close matches later
        return False
    return tp is str or tp == str | None


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"{COMMAND_LINE}: override {text!r} must look like section.key=value")
    parts = key.split(".")
    # A string setting takes the text as written (output_dir=2024-01-05 is a folder, not a date;
    # frame_template={video}/{frame:05d}.jpg is not a YAML mapping); quotes are still removed and
    # null still unsets an optional one.
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    if _is_text(parts) and not quoted and raw.strip() not in ("null", "~"):
        return parts, raw
    try:
        value = _load_yaml(raw)
    except _DuplicateKey as err:
        raise UserError(f"{COMMAND_LINE}: the value of {key!r} has the key {err.key!r} twice") from None
    except yaml.YAMLError:
        raise UserError(f"{COMMAND_LINE}: cannot read the value of {key!r} ({raw!r}) as YAML") from None
    return parts, value


def _wrap(parts: Sequence[str], value: Any, source: str) -> Any:
    """An override's value in the annotated form of the tree level it lands on."""
    if isinstance(value, dict) and len(parts) == 1 and parts[0] in ("model", *_SECTIONS):
        return _annotate({parts[0]: value}, source)[parts[0]]
    if isinstance(value, dict) and len(parts) == 2:
        return {k: _Sourced(v, source) for k, v in value.items()}
    return _Sourced(value, source)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted `key=value` overrides on a raw (annotated) config tree; values read as YAML."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        parts, value = _parse_override(text)
        if parts[0] not in _TOP_LEVEL:
            raise _unknown(parts[0], _TOP_LEVEL, COMMAND_LINE)
        if len(parts) > 1 and parts[0] == "output_dir":
            raise UserError(f"{COMMAND_LINE}: output_dir is a string, not a section")
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None or (isinstance(child, _Sourced) and child.value is None):
                child = {}
            if not isinstance(child, dict):
                raise UserError(f"{COMMAND_LINE}: {'.'.join(parts[: depth + 1])} is not a section")
            node[part] = child
            node = child
        leaf = _wrap(parts, value, COMMAND_LINE)
        if isinstance(leaf, dict) and isinstance(node.get(parts[-1]), dict):
            leaf = _merge(node[parts[-1]], leaf)
        node[parts[-1]] = leaf
    return raw


def _section_values(name: str, raw: Any, defaults: Any) -> dict[str, Any]:
    """Checked values of one section; `raw` maps keys to _Sourced leaves or leaf mappings.

    `defaults` is the object whose attributes a mapping-valued field given key by key is merged
    onto (the preset's `ModelConfig` for `model.loss_weights`).
    """
    if raw is None:
        return {}
    if isinstance(raw, _Sourced):
        if raw.value is None:
            return {}
        raise UserError(f"{raw.source}: {name} must be a mapping of keys, got {raw.value!r}")
    allowed = _keys_of(name)
    values = {}
    for key, item in raw.items():
        if key not in allowed:
            raise _unknown(key, allowed, _first_source(item), prefix=f"{name}.")
        dotted = f"{name}.{key}"
        if isinstance(item, _Sourced):
            values[key] = _check_value(dotted, item.value, item.source)
        else:
            values[key] = _mapping_value(dotted, item, getattr(defaults, key, None))
    return values


def _first_source(item: Any) -> str:
    """The source of a leaf, or of the first leaf below a mapping."""
    if isinstance(item, _Sourced):
        return item.source
    if isinstance(item, dict):
        for value in item.values():
            return _first_source(value)
    return COMMAND_LINE


def _mapping_value(dotted: str, item: dict[str, Any], default: Any) -> dict[str, Any]:
    """A mapping-typed field given key by key: merged onto its default, keys checked."""
    tp = _field_type(dotted)
    source = _first_source(item)
    if typing.get_origin(tp) is not dict or not isinstance(default, dict):
        raise UserError(f"{source}: {dotted} must be {_type_name(tp)}, got a mapping")
    merged = dict(default)
    for key, leaf in item.items():
        if key not in merged:
            raise _unknown(key, list(merged), _first_source(leaf), prefix=f"{dotted}.")
        if not isinstance(leaf, _Sourced):
            raise UserError(f"{_first_source(leaf)}: {dotted}.{key} must be a number, got a mapping")
        merged[key] = leaf.value
    return _check_value(dotted, merged, source)


def _build(raw: dict[str, Any]) -> Config:
    for key, value in raw.items():
        if key not in _TOP_LEVEL:
            raise _unknown(key, _TOP_LEVEL, _first_source(value))
    model_raw = raw.get("model")
    preset = ModelSection.preset
    if isinstance(model_raw, dict) and isinstance(model_raw.get("preset"), _Sourced):
        preset = _check_value("model.preset", model_raw["preset"].value, model_raw["preset"].source)
    model_values = _section_values("model", model_raw, PRESETS[preset])
    model_values.pop("preset", None)
    pretrained = model_values.pop("pretrained", None)
    model = ModelSection(preset, pretrained, model_values)
    sections = {name: _section_values(name, raw.get(name), None) for name in _SECTIONS}
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
    if isinstance(item, _Sourced) and isinstance(item.value, str) and item.value:
        return item.value
    source = item.source if isinstance(item, _Sourced) else COMMAND_LINE
    value = item.value if isinstance(item, _Sourced) else item
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
    raw = _read_yaml(resolve_config_path(path), ()) if path is not None else {}
    return _build(apply_overrides(raw, overrides))


def resolve_config_path(path: str | Path) -> Path:
    """`path` itself if it exists, else the packaged config of that name (with or without .yaml)."""
    given = Path(path)
    if given.exists() or given.parent != Path("."):
        return given.resolve()
    packaged = Path(__file__).resolve().parent / "configs"
    for candidate in (packaged / given.name, packaged / f"{given.name}.yaml"):
        if candidate.is_file():
            return candidate
    return given.resolve()


def config_from_dict(data: Mapping[str, Any], source: str, overrides: Sequence[str] = ()) -> Config:
    """Rebuild a `Config` from `Config.to_dict()` output (e.g. stored in a checkpoint)."""
    if not isinstance(data, Mapping):
        raise UserError(f"{source}: the stored config is not a mapping")
    return _build(apply_overrides(_annotate(dict(data), source), overrides))
