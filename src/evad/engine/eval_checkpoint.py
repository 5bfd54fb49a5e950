"""`evaluate_checkpoint`: what `evad eval` runs, a stored model scored on the validation split.

The model's architecture comes from the config stored in the checkpoint (the weights fix it); the
data and evaluation settings come from a config file with overrides, or from the stored config.
Existing results in the output folder are kept unless the caller asks to overwrite them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evad.config import Config, config_from_dict, load_config
from evad.engine import checkpoint as ckpt
from evad.engine import distributed
from evad.engine.evaluate import (
    DETECTIONS_CSV,
    METRICS_JSON,
    build_val_data,
    evaluate,
    make_model,
    make_postprocess,
)
from evad.errors import UserError, raised_alike_by_every_process
from evad.fileio import check_output_file

logger = logging.getLogger(__name__)


def evaluate_checkpoint(
    checkpoint: str | Path,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    keep_rate: float | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    data: tuple[Any, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the model stored in `checkpoint` on the validation split (what `evad eval` runs).

    The model's architecture always comes from the config stored in the checkpoint (the weights
    fix it); data and evaluation settings come from `config_path` (with `overrides`), or from the
    stored config when no file is given.

    Args:
        checkpoint: `last.pt` or `best.pt` of `evad train`.
        config_path: Config file for the data and eval sections; None uses the stored config.
        overrides: Dotted ``key=value`` overrides.
        keep_rate: Token keep rate; None uses `eval.keep_rate`, then the model's.
        out_dir: Where `detections.csv` and `metrics.json` go; default: next to the checkpoint,
            ``eval-<checkpoint name>[-kr<keep rate>]``.
        overwrite: Replace an existing `detections.csv` or `metrics.json` in `out_dir`.
        data: (dataset, loader) to use instead of building them from the config.
        progress: Show a progress bar.

    Returns:
        The summary of `evaluate` plus `out_dir` and the `keep_rate` used.
    """
    path = Path(checkpoint)
    with raised_alike_by_every_process():
        state, config, keep_rate, out_dir = _checkpoint_settings(
            path, config_path, overrides, keep_rate, out_dir, overwrite
        )

    with raised_alike_by_every_process():
        info = distributed.init_from_env(config.train.device)
    try:
        with raised_alike_by_every_process():
            dataset, loader = data if data is not None else build_val_data(config)
            num_classes = int(dataset.num_classes)
            stored_classes = state.get("dataset", {}).get("num_classes")
            if stored_classes is not None and stored_classes != num_classes:
                raise UserError(
                    f"{path}: the model predicts {stored_classes} classes, the validation set has "
                    f"{num_classes}"
                )
            stored_ids = state.get("dataset", {}).get("class_ids")
            class_ids = [int(c) for c in getattr(dataset, "class_ids", [])]
            if stored_ids is not None and class_ids and list(stored_ids) != class_ids:
                # Same count, other classes (another data.classes): every score would be
                # credited to the wrong class.
                raise UserError(
                    f"{path}: the model predicts classes {list(stored_ids)}, the validation set has "
                    f"{class_ids}; evaluate on the classes it was trained on (data.classes)"
                )
            model_cfg, model = make_model(config, num_classes)
            ckpt.load_model_state(model, state["model"], str(path))
        model.to(info.device)
        amp = config.train.amp if info.device.type == "cuda" else "none"
        summary = evaluate(
            model,
            loader,
            dataset,
            make_postprocess(config, model_cfg),
            keep_rate=keep_rate,
            out_dir=out_dir,
            device=info.device,
            amp=amp,
            progress=progress,
            ava_max_per_keyframe=config.eval.ava_max_per_keyframe,
            ava_input_order=config.eval.ava_input_order,
        )
    finally:
        distributed.cleanup(info)
    used = keep_rate if keep_rate is not None else model_cfg.keep_rate
    return {**summary, "out_dir": str(out_dir), "keep_rate": used}


def _checkpoint_settings(
    path: Path,
    config_path: str | Path | None,
    overrides: Sequence[str],
    keep_rate: float | None,
    out_dir: str | Path | None,
    overwrite: bool,
) -> tuple[dict[str, Any], Config, float | None, Path]:
    """The checkpoint's state, the config (model section from the checkpoint), the keep rate and
    the output folder of `evaluate_checkpoint`, refusing outputs that exist without `overwrite`."""
    model_overrides = [o for o in overrides if o.strip().startswith("model.")]
    if model_overrides:
        raise UserError(
            f"{model_overrides[0].split('=')[0].strip()}: the model comes from the checkpoint and cannot "
            "be changed here; evaluate at another keep rate with --keep-rate (or eval.keep_rate), "
            "another person threshold with eval.person_threshold"
        )
    state = ckpt.load_checkpoint(path)
    stored = state.get("config")
    if config_path is not None:
        config = load_config(config_path, overrides)
    elif stored is not None:
        config = config_from_dict(stored, str(path), overrides)
    else:
        raise UserError(f"{path}: stores no config; pass --config")
    if stored is not None:
        model_section = config_from_dict(stored, str(path)).model
        if model_section != config.model and os.environ.get("RANK", "0") == "0":  # once per torchrun job
            preset = stored.get("model", {}).get("preset")
            named = f" (preset {preset})" if preset else " (a custom model)"
            logger.info("model settings are taken from the checkpoint%s", named)
        config.model = model_section
    if keep_rate is None:
        keep_rate = config.eval.keep_rate
    if out_dir is None:
        suffix = f"-kr{keep_rate:g}" if keep_rate is not None else ""
        out_dir = path.parent / f"eval-{path.stem}{suffix}"
    out_dir = Path(out_dir)
    existing = [name for name in (DETECTIONS_CSV, METRICS_JSON) if (out_dir / name).exists()]
    if existing and not overwrite:
        raise UserError(
            f"{out_dir} already holds {' and '.join(existing)}; pass --overwrite to replace them or --out "
            "elsewhere"
        )
    # Before the inference, which can take an hour: a file in the way of the folder, or a folder
    # that cannot be written in, would otherwise fail only when the results are written.
    check_output_file(out_dir / METRICS_JSON, overwrite=True, create_folders=True)
    return state, config, keep_rate, out_dir
