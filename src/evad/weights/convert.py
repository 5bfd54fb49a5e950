"""Converting checkpoints to evad weights: what `evad convert` runs (EVAD issue 6).

The source is read without running code and renamed to evad's names (`evad.weights.loading`), the
model it describes is built to check every tensor's name and shape, and the tensors that fit are
written with their `ModelConfig` as evad weights (`evad.weights.evad_format`). The architecture
comes from

- an official EVAD checkpoint: the official YAML config it was trained with (``official_config``,
  else the ``cfg`` the checkpoint stores);
- evad weights or an `evad train` checkpoint: their stored config;
- VideoMAE files: the tensor shapes (and a Hugging Face ``config.json``), with the rest of the
  detector from the preset ``model`` (default: the preset of the same width and depth). Only the
  converted tensors are written (backbone, and decoder blocks from pre-training); the rest of the
  detector starts from its initialisation when these weights are loaded. Such weights start a
  training run (``model.pretrained``); they cannot detect.

``config.json`` names the preset only when the model has its architecture, else ``"custom"``
(`evad.weights.evad_format.preset_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evad.errors import UserError
from evad.models.factory import ModelConfig, build_model
from evad.weights.architecture import infer_model_config, nearest_preset
from evad.weights.evad_format import check_destination, info_for, model_config_from_info, save_weights
from evad.weights.loading import LoadReport, ShapeMismatch, match_tensors, resolve_layout, to_evad
from evad.weights.official_config import parse_official_config, read_official_config
from evad.weights.reading import Checkpoint, Converted, read_checkpoint
from evad.weights.videomae import hf_backbone_fields


@dataclass
class ConvertResult:
    """What `convert_checkpoint` wrote.

    Attributes:
        dst: The evad weights folder.
        layout: The source's layout.
        config: The model the weights belong to.
        report: Tensors written, ignored and absent (absent ones start from initialisation).
    """

    dst: Path
    layout: str
    config: ModelConfig
    report: LoadReport


@dataclass
class _Target:
    config: ModelConfig
    preset: str | None  # the preset it starts from; stored only if it has its architecture
    classes: dict[str, list] | None = None
    test_short_side: int | None = None
    notes: list[str] | None = None


def _official_target(ckpt: Checkpoint, official_config: str | Path | None) -> _Target:
    if official_config is not None:
        official = read_official_config(official_config)
    elif ckpt.official_cfg is not None:
        official = parse_official_config(ckpt.official_cfg, f"{ckpt.path} (stored cfg)")
    else:
        raise UserError(
            f"{ckpt.path}: official EVAD checkpoints need --official-config FILE, the official YAML "
            "config they were trained with (keep rates, w_kf and head sizes are not in the tensors)"
        )
    cfg = official.model
    preset = nearest_preset(cfg.embed_dim, cfg.depth)
    return _Target(cfg, preset, None, official.test_short_side, official.notes)


def _inferred_target(
    ckpt: Checkpoint, converted: Converted, model: str | None, num_classes: int | None
) -> _Target:
    hf = ckpt.hf_config
    backbone = hf_backbone_fields(hf, str(ckpt.path)) if hf is not None else None
    heads = hf.get("decoder_num_attention_heads") if hf is not None else None
    cfg, preset = infer_model_config(
        converted.tensors, str(ckpt.path), model, num_classes or 80, backbone=backbone, decoder_heads=heads
    )
    return _Target(cfg, preset)


def _target(
    ckpt: Checkpoint,
    converted: Converted,
    layout: str,
    official_config: str | Path | None,
    model: str | None,
    num_classes: int | None,
) -> _Target:
    """The model the converted weights belong to, refusing options that do not apply."""
    if official_config is not None and layout != "evad-official":
        raise UserError("--official-config only applies to official EVAD checkpoints")
    stored = layout == "evad-official" or ckpt.evad_info is not None
    if stored and model is not None:
        raise UserError(f"--model does not apply to {ckpt.path}: its architecture comes from its config")
    if layout == "evad-official":
        target = _official_target(ckpt, official_config)
    elif ckpt.evad_info is not None:
        info: dict[str, Any] = ckpt.evad_info
        cfg = model_config_from_info(info, str(ckpt.path))
        target = _Target(cfg, info["model"].get("preset"), info.get("classes"), info.get("test_short_side"))
    else:
        return _inferred_target(ckpt, converted, model, num_classes)
    if num_classes is not None and num_classes != target.config.num_classes:
        raise UserError(
            f"--num-classes {num_classes}, but {ckpt.path} predicts {target.config.num_classes} classes"
        )
    return target


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    source_format: str = "auto",
    official_config: str | Path | None = None,
    model: str | None = None,
    num_classes: int | None = None,
    overwrite: bool = False,
) -> ConvertResult:
    """Convert `src` to evad weights in the folder `dst` (see the module docstring).

    Args:
        src: Checkpoint file or folder.
        dst: Output folder (``model.safetensors`` + ``config.json``); must not exist unless
            `overwrite`.
        source_format: "auto" or the layout `src` must have (`evad.weights.loading.LAYOUTS`).
        official_config: Official YAML config of an official EVAD checkpoint.
        model: Preset completing a VideoMAE backbone into a detector.
        num_classes: Action classes of that detector (default 80); for other sources, a check.
        overwrite: Replace an existing evad weights folder.

    Raises:
        UserError: For an unreadable, unrecognised or mismatching source, options that do not
            apply, or an existing `dst`.
    """
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):  # 0 would silently mean the default 80
        raise UserError(f"num_classes must be a whole number >= 1, got {num_classes!r}")
    dst = Path(dst)
    check_destination(dst, overwrite)  # before the (possibly long) reading
    ckpt = read_checkpoint(src)
    layout = resolve_layout(ckpt, source_format)
    converted = to_evad(ckpt, layout)
    target = _target(ckpt, converted, layout, official_config, model, num_classes)
    try:
        with torch.no_grad():
            detector = build_model(target.config)
    except ValueError as err:
        raise UserError(f"{ckpt.path}: {err}") from None
    try:
        fitting, report = match_tensors(detector.state_dict(), converted, str(ckpt.path), layout)
    except ShapeMismatch as err:
        if layout != "evad" or ckpt.evad_info is not None:
            raise
        # Bare evad tensors: only the backbone's and decoder's sizes show in them, the rest is the
        # preset's guess.
        raise UserError(
            f"{ckpt.path}: {err.detail}: evad tensors without their config.json do not say the sizes of "
            f"the heads (taken from preset {target.preset}); convert the folder `evad convert` wrote, or "
            "the `evad train` checkpoint"
        ) from None
    report.notes += target.notes or []
    source = {"path": str(src), "layout": layout}
    info = info_for(target.config, target.classes, target.test_short_side, source, target.preset)
    save_weights(dst, fitting, info, overwrite)
    return ConvertResult(dst, layout, target.config, report)
