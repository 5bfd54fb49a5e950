"""Training checkpoints: what is stored, atomic writes and `weights_only` loading.

Files in the output directory (`evad.engine.snapshots` puts together what the checkpoints hold):

- ``last.pt``: the full training state after the latest finished epoch (every
  `train.checkpoint_every` epochs and after the last): model, optimizer, scheduler, gradient
  scaler, epochs done, global step, best metric, the config and the RNG states. `--resume` reads it.
- ``best.pt``: the model, config and metrics of the evaluation with the best frame-mAP so far
  (no optimizer state: it is what `evad eval` and fine-tuning read).
- ``config.yaml``: the config of the run, readable by `evad train --config` / `evad eval`.

Everything stored is tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)`
reads it: no pickled code runs when a checkpoint is opened. Writes go to a temporary file in the
same directory and are renamed over the target, so an interrupted save never leaves a truncated
checkpoint behind.

`load_checkpoint` also reads evad weights (a folder with ``model.safetensors``
and ``config.json``, see `evad.weights.evad_format`): the model and its classes, no training state.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from evad.errors import UserError
from evad.fileio import write_atomically

FORMAT = "evad-checkpoint"
VERSION = 1
LAST = "last.pt"
BEST = "best.pt"
CONFIG = "config.yaml"


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write `state` (plus the format marker) to `path` atomically."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    write_atomically(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an evad checkpoint on the CPU with `weights_only=True`, or evad weights.

    Evad weights (a folder or a ``.safetensors`` file with ``config.json`` beside it) come back in
    the same layout with the model section of the config only and ``partial_config`` set. Files
    are read by `evad.weights.reading.load_torch_file`, so every command words a refused or
    damaged file alike.

    Args:
        path: A ``best.pt`` / ``last.pt`` of `evad train`, or an evad weights folder.

    Raises:
        UserError: If the file cannot be read, is not a torch file, holds anything but tensors
            and plain containers, or is not an evad checkpoint; if `path` is an `evad train`
            output folder or evad weights of a backbone only (naming the file).
    """
    from evad.weights.reading import load_torch_file, read_checkpoint

    path = Path(path)
    if path.exists() and (path.is_dir() or path.suffix == ".safetensors"):
        from evad.weights.evad_format import as_training_checkpoint

        return as_training_checkpoint(read_checkpoint(path))
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    state = load_torch_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise UserError(
            f"{path}: not an evad checkpoint (expected a dict with format {FORMAT!r} and 'model')"
        )
    if not isinstance(state.get("dataset", {}), dict):
        raise UserError(f"{path}: damaged evad checkpoint (its 'dataset' entry is not a mapping)")
    if not isinstance(state.get("config", {}), dict):
        raise UserError(f"{path}: damaged evad checkpoint (its 'config' entry is not a mapping)")
    weights = state["model"]
    if not (
        isinstance(weights, Mapping)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items())
    ):
        raise UserError(
            f"{path}: damaged evad checkpoint (its 'model' entry is not a mapping of names to tensors)"
        )
    return state


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of `model`, unwrapped from DistributedDataParallel."""
    return unwrap(model).state_dict()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a full state dict strictly; a mismatch is a one-line UserError naming `source` and
    counting the missing, unexpected and reshaped weights (with up to three names of each)."""
    expected = unwrap(model).state_dict()
    problems = []
    for what, names in (
        ("missing", [k for k in expected if k not in state]),
        ("unexpected", [k for k in state if k not in expected]),
        (
            "of another shape",
            [
                f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                for k, v in expected.items()
                if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
            ],
        ),
    ):
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            problems.append(f"{len(names)} {what} ({shown})")
    if problems:
        raise UserError(f"{source}: weights do not fit the configured model: {'; '.join(problems)}")
    check_finite(state, source)
    try:
        unwrap(model).load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[0]
        raise UserError(f"{source}: weights do not fit the configured model: {detail}") from None


def check_finite(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinite values (a damaged file, or a run saved after it
    diverged): they would only surface later as a failure deep inside the model."""
    bad = [
        name
        for name, value in tensors.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()
    ]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise UserError(f"{source}: NaN or infinite weights in {shown}; such weights cannot predict anything")


# ----------------------------------------------------------------------------------------------
# Random number generators


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (this process's device's) CUDA generator states as tensors and
    plain values."""
    version, internal, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002 (the global generator's)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned (CUDA states only where CUDA is available)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    key = npy["key"].numpy().astype(np.uint32)
    legacy = (npy["name"], key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002 (the global generator's)
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, list | tuple):  # every visible device's, as evad saved it before 2026-11-23
        device = torch.cuda.current_device() if torch.cuda.is_available() else len(cuda)
        cuda = cuda[device] if device < len(cuda) else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)  # the current device's: a resume may see fewer devices
