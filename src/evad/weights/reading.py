"""Reading weight files without running code (EVAD issue 6: pretrained weights).

Everything that reaches the model goes through `read_checkpoint`, which accepts

- ``.safetensors`` files (a plain name -> tensor table; nothing in them can execute),
- PyTorch files (``.pth``, ``.pt``, ``.pyth``, ``.bin``, ...) read with
  ``torch.load(weights_only=True)``: tensors, numbers, strings and containers only. The handful of
  harmless classes that training scripts commonly store beside the weights (``argparse.Namespace``,
  numpy scalars) are allowed by name; anything else a pickle asks for is refused, so a file whose
  unpickling would call code is an error before any of that code runs,
- folders: a Hugging Face transformers folder (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``, either possibly sharded with its ``.index.json``) or evad weights written
  by `evad convert`.

Wrappers are removed: a state dict stored under ``model_state``, ``model``, ``module`` or
``state_dict`` (up to three levels deep), and a ``module.`` prefix on every name (DistributedDataParallel).
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evad.errors import UserError

WRAPPER_KEYS = ("model_state", "model", "module", "state_dict")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_INDEX = "model.safetensors.index.json"
HF_BIN_INDEX = "pytorch_model.bin.index.json"
CONFIG_FILE = "config.json"
EVAD_FORMAT = "evad-weights"

_NUMPY_DTYPES = (
    "Bool Int8 Int16 Int32 Int64 UInt8 UInt16 UInt32 UInt64 Float16 Float32 Float64 Complex64 Complex128"
)


@dataclass
class Checkpoint:
    """Tensors read from one file or folder, with what came with them.

    Attributes:
        path: The file or folder read.
        tensors: Flat name -> tensor mapping, wrappers removed.
        hf_config: The ``config.json`` of a Hugging Face folder.
        evad_info: The ``config.json`` of evad weights (`evad.weights.evad_format`), or the same
            fields rebuilt from an `evad train` checkpoint.
        official_cfg: The YAML text an official EVAD checkpoint stores under ``cfg``.
    """

    path: Path
    tensors: dict[str, Tensor]
    hf_config: dict[str, Any] | None = None
    evad_info: dict[str, Any] | None = None
    official_cfg: str | None = None


@dataclass
class Converted:
    """A checkpoint's tensors under evad's parameter names.

    Attributes:
        tensors: evad name -> tensor.
        origin: evad name -> the name it had in the checkpoint (a fused qkv names the query's).
        dropped: Checkpoint names evad has no use for (classifier heads, pixel decoders, ...).
        notes: Plain-words remarks for the load report.
    """

    tensors: dict[str, Tensor]
    origin: dict[str, str]
    dropped: list[str]
    notes: list[str]


def rename_tensors(tensors: Mapping[str, Tensor], rename: Callable[[str], str | None]) -> Converted:
    """Tensors under the names `rename` gives them; those it maps to None are dropped."""
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    dropped, notes = [], []
    for name, value in tensors.items():
        target = rename(name)
        if target is None:
            dropped.append(name)
        else:
            out[target], origin[target] = value, name
    if any(n.endswith("pos_embed") for n in dropped):
        notes.append("a learned position table (pos_embed) is not used: evad adds the fixed sinusoid table")
    return Converted(out, origin, dropped, notes)


def _allowed_globals() -> list[Any]:
    core = getattr(np, "_core", None) or np.core
    dtypes = [getattr(np.dtypes, f"{name}DType") for name in _NUMPY_DTYPES.split()]
    return [argparse.Namespace, core.multiarray.scalar, np.dtype, *dtypes]


def _file_kind(path: Path) -> str:
    """ "zip" (PyTorch >= 1.6), "pickle" (older PyTorch), "safetensors", "empty" or "other"."""
    try:
        with open(path, "rb") as file:
            head = file.read(9)
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    if not head:
        return "empty"
    if head.startswith(b"PK"):
        return "zip"
    if head.startswith(b"\x80"):
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{":  # 8-byte header length, then the JSON header
        return "safetensors"
    return "other"


def load_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with every failure a one-line UserError."""
    kind = _file_kind(path)
    if kind in ("empty", "other"):
        what = "an empty file" if kind == "empty" else "not a PyTorch or safetensors file"
        raise UserError(f"{path}: not a readable checkpoint ({what})")
    if kind == "safetensors":
        return load_safetensors(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_allowed_globals()):
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    except Exception as err:  # a refused global, a truncated zip, or a damaged pickle
        raise UserError(f"{path}: {_torch_load_failure(err, kind)}") from None


def _torch_load_failure(err: Exception, kind: str = "other") -> str:
    """What went wrong in ``torch.load(weights_only=True)``, in one line, for a message naming the file.

    PyTorch's own text advises loading with ``weights_only=False``, which would run whatever code
    the file holds; none of it is passed on.

    Args:
        err: The exception `torch.load` raised.
        kind: What `_file_kind` made of the file ("zip", "pickle", ...).

    Returns:
        E.g. "refused: unpickling it would call posix.system; ..." or "not a readable checkpoint
        (truncated or corrupt)".
    """
    text = str(err)
    if "Weights only load failed" in text:  # a global it may not create, or another instruction
        refused = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"would call {refused.group(1)}" if refused else "uses pickle instructions beyond plain data"
        return (
            f"refused: unpickling it {what}; evad reads only tensors and plain values "
            "(torch.load with weights_only=True)"
        )
    if "TorchScript" in text:
        return "a TorchScript model (e.g. from evad export), not a checkpoint of weights"
    if kind == "zip" or isinstance(err, EOFError):
        return "not a readable checkpoint (truncated or corrupt)"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"not a readable checkpoint ({first})"


def load_safetensors(path: Path) -> dict[str, Tensor]:
    """All tensors of a safetensors file; a damaged file is a one-line UserError."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    except Exception as err:  # SafetensorError: bad header, truncated data
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable safetensors file ({detail})") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or a UserError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _holds_weights(value: Any) -> bool:
    """Whether `value` is a state dict, or a mapping wrapping one."""
    if not isinstance(value, Mapping) or not value:
        return False
    return any(isinstance(v, Tensor) for v in value.values()) or any(
        _holds_weights(value.get(k)) for k in WRAPPER_KEYS
    )


def state_dict_of(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The flat tensor table inside a loaded object, and the top-level mapping it came from.

    Raises:
        UserError: If no mapping of names to tensors is found.
    """
    top = obj if isinstance(obj, Mapping) else {}
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if _holds_weights(obj.get(k))), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f"{path}: not a checkpoint (expected a mapping of names to tensors)")
    others = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if others or not all(isinstance(k, str) for k in obj):
        shown = ", ".join(map(str, others[:3]))
        raise UserError(f"{path}: not a state dict (entries that are not tensors: {shown})")
    tensors = dict(obj)
    if all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors, dict(top)


def train_output_files(path: Path) -> list[Path]:
    """The checkpoints in `path` if it is an `evad train` output folder (no ``config.json``, but
    ``best.pt`` or ``last.pt``), else []."""
    if not path.is_dir() or (path / CONFIG_FILE).exists():
        return []
    return [path / name for name in ("best.pt", "last.pt") if (path / name).is_file()]


def check_not_train_output(path: Path) -> None:
    """Refuse an `evad train` output folder given where a checkpoint or weights folder belongs.

    Raises:
        UserError: Naming the checkpoints inside to pass instead.
    """
    files = train_output_files(path)
    if files:
        raise UserError(f"{path} is an evad train output folder; pass {' or '.join(map(str, files))}")


def _read_folder(path: Path) -> Checkpoint:
    check_not_train_output(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(
            f"{path}: a weights folder needs a {CONFIG_FILE} (a Hugging Face VideoMAE folder or "
            "the output of `evad convert`)"
        )
    config = read_json(config_path)
    if config.get("format") == EVAD_FORMAT:
        from evad.weights.evad_format import WEIGHTS_FILE

        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise UserError(f"{path}: evad weights folder without {WEIGHTS_FILE}")
        return Checkpoint(path, load_safetensors(weights), evad_info=config)
    if "model_type" not in config:
        raise UserError(f"{config_path}: neither evad weights nor a Hugging Face config (no model_type)")
    if config["model_type"] != "videomae":
        raise UserError(f"{config_path}: model_type {config['model_type']!r} is not 'videomae'")
    for index_name in (HF_INDEX, HF_BIN_INDEX):
        if (path / index_name).is_file():
            return Checkpoint(path, _read_shards(path, index_name), hf_config=config)
    for name in HF_WEIGHTS:
        if (path / name).is_file():
            file = path / name
            loaded = load_safetensors(file) if name.endswith(".safetensors") else load_torch_file(file)
            return Checkpoint(path, state_dict_of(loaded, file)[0], hf_config=config)
    raise UserError(f"{path}: Hugging Face folder without {' or '.join(HF_WEIGHTS)}")


def _read_shards(path: Path, index_name: str) -> dict[str, Tensor]:
    """The tensors of a sharded Hugging Face checkpoint (safetensors or PyTorch shards)."""
    index = read_json(path / index_name).get("weight_map")
    if not isinstance(index, dict) or not index:
        raise UserError(f"{path / index_name}: no weight_map naming the shards")
    tensors: dict[str, Tensor] = {}
    for shard in sorted(set(index.values())):
        file = path / shard
        if not file.is_file():
            raise UserError(f"{path / index_name}: shard {shard} is missing")
        if shard.endswith(".safetensors"):
            tensors.update(load_safetensors(file))
        else:
            tensors.update(state_dict_of(load_torch_file(file), file)[0])
    missing = sorted(set(index) - set(tensors))
    if missing:
        raise UserError(
            f"{path / index_name}: {len(missing)} tensors listed but in no shard, e.g. {missing[0]}"
        )
    return tensors


def _evad_train_info(top: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The evad-weights fields of an `evad train` checkpoint (`best.pt`, `last.pt`)."""
    if top.get("format") != "evad-checkpoint" or "config" not in top:
        return None
    from evad.config import config_from_dict
    from evad.weights.evad_format import info_for

    config = config_from_dict(top["config"], str(path))
    dataset = top.get("dataset") or {}
    if "num_classes" in dataset:
        num_classes = int(dataset["num_classes"])
    else:  # the last decoder block's classifier says how many classes
        bias = [v for k, v in top["model"].items() if k.endswith("action_logits.bias")]
        num_classes = int(bias[-1].shape[0]) if bias else 80
    classes = None
    if "class_ids" in dataset:
        classes = {"ids": list(dataset["class_ids"]), "names": list(dataset.get("class_names") or [])}
    cfg = config.model.model_config(num_classes)
    return info_for(cfg, classes, config.data.test_short_side, preset=config.model.preset)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read weights from a file or folder without running code.

    Raises:
        UserError: For a missing, unreadable, truncated or foreign file, one that asks to run
            code, or an `evad train` output folder (naming its checkpoints), in one line naming
            the file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found")
    if path.is_dir():
        return _read_folder(path)
    if path.suffix == ".safetensors":
        sibling = path.parent / CONFIG_FILE
        if sibling.is_file():
            config = read_json(sibling)
            if config.get("format") == EVAD_FORMAT:
                return Checkpoint(path, load_safetensors(path), evad_info=config)
        return Checkpoint(path, load_safetensors(path))
    tensors, top = state_dict_of(load_torch_file(path), path)
    cfg = top.get("cfg")
    return Checkpoint(
        path,
        tensors,
        evad_info=_evad_train_info(top, path),
        official_cfg=cfg if isinstance(cfg, str) else None,
    )
