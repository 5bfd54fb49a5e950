"""evad's own weights format: a folder with ``model.safetensors`` and ``config.json``.

`evad convert` writes it, and `evad eval --checkpoint`, `evad detect --checkpoint`,
``create_model(..., pretrained=...)`` and `model.pretrained` in a training config read it. Loading
never unpickles anything: the tensors are safetensors and the description is JSON::

    DST/
      model.safetensors   tensors under evad's parameter names (possibly a subset, e.g. a backbone)
      config.json         {"format": "evad-weights", "version": 1,
                           "num_classes": 80,
                           "model": {"preset": "vit-b" or "custom", ...every ModelConfig field...},
                           "classes": {"ids": [1, ...], "names": ["bend/bow (at the waist)", ...]} or null,
                           "test_short_side": 288 or null,
                           "source": {"path": "...", "layout": "evad-official"}}

``preset`` names the preset whose architecture the weights have (`ARCHITECTURE` fields equal; other
settings such as the keep rate may differ), else it is ``"custom"``: the fields alone describe the
model. Weights converted from a VideoMAE checkpoint hold a backbone only (``backbone.*``, perhaps
decoder blocks from pre-training): they start a training run (``model.pretrained``) and cannot
detect.

The folder is written next to its final place and renamed into it, so an interrupted write never
leaves a half-written folder behind; an existing folder is only replaced with ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import Tensor

from evad.errors import UserError
from evad.fileio import folder_entries, link_target, make_dirs
from evad.models.factory import PRESETS, ModelConfig
from evad.weights.reading import CONFIG_FILE, EVAD_FORMAT, Checkpoint, train_output_files

VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CUSTOM = "custom"
# ModelConfig fields that make the architecture: the tensors' shapes and the attention heads.
ARCHITECTURE = (
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "patch_size",
    "tubelet_size",
    "fpn_dim",
    "num_queries",
    "num_stages",
    "loc_heads",
    "loc_feedforward",
    "dim_dynamic",
    "pooler_resolution",
    "cls_layers",
    "reg_layers",
    "action_head",
    "decoder_dim",
    "decoder_depth",
    "decoder_heads",
    "decoder_mlp_ratio",
    "act_dim",
    "act_layers",
    "actor_pooler_resolution",
)


def preset_of(cfg: ModelConfig, preset: str | None) -> str:
    """`preset` if `cfg` has its architecture (the `ARCHITECTURE` fields), else `CUSTOM`.

    Args:
        cfg: The model the weights belong to.
        preset: The preset it was built from, if any.
    """
    if preset is None or preset not in PRESETS:
        return CUSTOM
    base = PRESETS[preset]
    return CUSTOM if any(getattr(base, name) != getattr(cfg, name) for name in ARCHITECTURE) else preset


def model_section(info: dict[str, Any]) -> Any:
    """The ``model`` mapping of a ``config.json`` as a config's model section (no ``custom`` preset:
    its fields describe the whole model)."""
    model = info.get("model")
    if isinstance(model, dict) and model.get("preset") in (CUSTOM, None):
        return {k: v for k, v in model.items() if k != "preset"}
    return model


def info_for(
    cfg: ModelConfig,
    classes: dict[str, list] | None = None,
    test_short_side: int | None = None,
    source: dict[str, str] | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` content describing weights of the model `cfg`.

    Args:
        cfg: The model.
        classes: ``{"ids": [...], "names": [...]}`` of its action outputs, if known.
        test_short_side: The input short side it was evaluated at, if known.
        source: Where the weights came from (``path`` and ``layout``).
        preset: The preset `cfg` was built from; stored only if `cfg` has its architecture
            (`preset_of`), else ``"custom"``.
    """
    fields = dataclasses.asdict(cfg)  # tuples become JSON lists when written
    num_classes = fields.pop("num_classes")
    return {
        "format": EVAD_FORMAT,
        "version": VERSION,
        "num_classes": num_classes,
        "model": {"preset": preset_of(cfg, preset), **fields},
        "classes": classes,
        "test_short_side": test_short_side,
        "source": source,
    }


def model_config_from_info(info: dict[str, Any], source: str) -> ModelConfig:
    """The `ModelConfig` a ``config.json`` describes (checked by `evad.config` like any config)."""
    from evad.config import config_from_dict

    version = info.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise UserError(f"{source}: evad weights version {version!r}; this evad reads up to {VERSION}")
    num_classes = info.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"{source}: num_classes must be a positive integer, got {num_classes!r}")
    model = model_section(info)
    if not isinstance(model, dict):
        raise UserError(f"{source}: 'model' must be a mapping of ModelConfig fields")
    return config_from_dict({"model": model}, source).model.model_config(num_classes)


def class_list(info: dict[str, Any], num_classes: int, source: str) -> tuple[list[int], list[str]]:
    """Class ids and names of the outputs: stored ones, else ids 1..K named "class k"."""
    classes = info.get("classes") or {}
    try:
        ids = [int(i) for i in classes.get("ids") or range(1, num_classes + 1)]
        names = [str(n) for n in classes.get("names") or [f"class {i}" for i in ids]]
    except (AttributeError, TypeError, ValueError):  # a hand-edited config.json
        raise UserError(
            f'{source}: "classes" must be {{"ids": [integers], "names": [names]}} or null'
        ) from None
    if len(ids) != num_classes or len(names) != num_classes:
        raise UserError(
            f"{source}: {len(ids)} class ids and {len(names)} names for a model with {num_classes} classes"
        )
    return ids, names


def holds_detector(names: Iterable[str]) -> bool:
    """Whether evad tensor `names` (or a name -> tensor mapping) are a whole detector's, not a
    backbone's (with perhaps the decoder blocks of VideoMAE pre-training)."""
    return any(name.startswith("localization.") for name in names)


def as_training_checkpoint(ckpt: Checkpoint) -> dict[str, Any]:
    """Evad weights in the layout `evad.engine.checkpoint.load_checkpoint` returns for `best.pt`.

    The stored config holds the model section only (plus the test short side when known), and
    ``partial_config`` tells `evad eval` that data settings must come from ``--config``.

    Raises:
        UserError: If `ckpt` is not evad weights, or holds a backbone only (naming the file).
    """
    if ckpt.evad_info is None:
        raise UserError(
            f"{ckpt.path}: not evad weights (no config.json with format {EVAD_FORMAT!r} beside it)"
        )
    if not holds_detector(ckpt.tensors):
        raise UserError(
            f"{ckpt.path}: holds only a backbone ({len(ckpt.tensors)} tensors), not a detector: it is "
            f"meant for model.pretrained={ckpt.path} when training, not for detection or evaluation"
        )
    source = str(ckpt.path)
    cfg = model_config_from_info(ckpt.evad_info, source)
    class_ids, class_names = class_list(ckpt.evad_info, cfg.num_classes, source)
    config: dict[str, Any] = {"model": model_section(ckpt.evad_info)}
    if ckpt.evad_info.get("test_short_side"):
        config["data"] = {"test_short_side": int(ckpt.evad_info["test_short_side"])}
    dataset = {"num_classes": cfg.num_classes, "class_ids": class_ids, "class_names": class_names}
    return {
        "format": "evad-checkpoint",
        "model": ckpt.tensors,
        "config": config,
        "dataset": dataset,
        "partial_config": True,
    }


def is_weights_path(path: str | Path) -> bool:
    """Whether `path` names evad weights by its form (a folder or a ``.safetensors`` file); an
    `evad train` output folder (``best.pt``, ``last.pt``, no ``config.json``) does not."""
    path = Path(path)
    if train_output_files(path):
        return False  # reading it says which file to pass
    return path.is_dir() or path.suffix == ".safetensors"


def _contiguous_unshared(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Tensors safetensors accepts: contiguous, CPU, no two sharing memory."""
    out, seen = {}, set()
    for name, value in tensors.items():
        value = value.detach().cpu().contiguous()
        key = (value.untyped_storage().data_ptr(), value.storage_offset())
        if value.numel() and key in seen:
            value = value.clone()
        seen.add(key)
        out[name] = value
    return out


def check_destination(dst: Path, overwrite: bool) -> None:
    if dst.suffix == ".safetensors":
        raise UserError(f"{dst}: give a folder name; evad writes {WEIGHTS_FILE} and {CONFIG_FILE} into it")
    if not dst.exists():
        return
    if not overwrite:
        raise UserError(f"{dst} exists; pass --overwrite to replace it")
    others = sorted(folder_entries(dst) - {WEIGHTS_FILE, CONFIG_FILE})
    if others:
        raise UserError(f"{dst} holds other files ({', '.join(others[:3])}); not replacing it")


def save_weights(
    dst: str | Path, tensors: dict[str, Tensor], info: dict[str, Any], overwrite: bool = False
) -> Path:
    """Write evad weights (`tensors` and the ``config.json`` `info`) to the folder `dst`.

    Raises:
        UserError: If `dst` exists (without `overwrite`), is a file or holds other files, or
            cannot be written.
    """
    import json

    from safetensors.torch import save_file

    dst = Path(dst)
    check_destination(dst, overwrite)
    # A symbolic link to a folder stays; the folder it names is replaced (renaming the link aside
    # put a real folder in its place and left the link behind as a hidden `.tmp.old` file).
    target = link_target(dst)
    try:
        make_dirs(target.parent)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as err:
        raise UserError(f"{dst}: cannot write: {err.strerror or err}") from None
    old = target.parent / f"{tmp.name}.old"
    try:
        save_file(_contiguous_unshared(tensors), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes a private folder
        for file in tmp.iterdir():
            os.chmod(file, 0o666 & ~umask)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except OSError as err:
        raise UserError(f"{dst}: cannot write: {err.strerror or err}") from None
    finally:
        if old.exists() and not target.exists():  # interrupted between the two renames
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return dst
