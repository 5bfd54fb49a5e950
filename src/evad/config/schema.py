"""The config's dataclasses: one per YAML section and the whole `Config` (SPEC section 6).

`ModelSection` is the `model:` section (a preset plus `ModelConfig` overrides), `TrainConfig` the
`train:` section and `EvalConfig` the `eval:` section; the `data:` section is
`evad.data.config.DataConfig`, beside the data code it configures. The defaults are the paper's
ViT-B recipe. Values are checked when a config is read or rebuilt (`evad.config.checks`,
`evad.config.build`), not by these classes. `Config.to_dict` gives plain dicts, lists and scalars,
which `config_from_dict` reads back (checkpoints store them), and `Config.save` writes them as YAML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evad.data.config import DataConfig
from evad.fileio import write_atomically
from evad.models.factory import ModelConfig, get_config

AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


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
