"""What a training run's checkpoints hold, and reading `last.pt` back into a resumed run.

`save_last` writes the full training state at a `StopPoint` (whole epochs done, or an epoch that
`train.max_steps` cut, with every process's RNG state at the cut); `save_best` writes the weights and
metrics of the best evaluation; both start from `snapshot`, what every checkpoint holds. `restore`
loads what `save_last` wrote into a new run's model, optimizer, scheduler, scaler and RNGs, and says
where that run goes on (`Resumed`). The file format and the atomic writes are
`evad.engine.checkpoint`'s; `evad.engine.train` decides when to save and when to resume.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evad.config import Config, TrainConfig
from evad.engine import checkpoint as ckpt
from evad.engine import distributed
from evad.engine.optim import move_schedule
from evad.engine.runlog import log_info
from evad.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class StopPoint:
    """Where training stands: `epochs` whole epochs done, then `epoch_batches` micro-batches of the
    next one (an epoch cut by `max_steps`), with `rngs` every process's RNG state at that cut."""

    epochs: int
    epoch_batches: int = 0
    rngs: list[dict[str, Any]] | None = None

    @property
    def epoch_number(self) -> int:
        """The 1-based epoch the run is at: the last whole one, or the cut one."""
        return self.epochs + (1 if self.epoch_batches else 0)


def dataset_info(train_set: Any) -> dict[str, Any]:
    """The classes a model is trained on, as checkpoints store them (inference names the model's
    outputs by them; `evad eval` and a resumed run check their number)."""
    return {
        "num_classes": int(train_set.num_classes),
        "class_ids": [int(c) for c in train_set.class_ids],
        "class_names": [str(n) for n in train_set.class_names],
    }


def snapshot(
    model: nn.Module, config: Config, dataset: dict[str, Any], point: StopPoint, global_step: int
) -> dict[str, Any]:
    """What every checkpoint holds: weights (unwrapped from DDP), config, classes and progress."""
    return {
        "model": ckpt.model_state(model),
        "config": config.to_dict(),
        "dataset": dataset,
        "epoch": point.epochs,
        "global_step": global_step,
    }


def save_last(
    path: Path,
    snapshot: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    *,
    point: StopPoint,
    best_metric: float | None,
    eval_pending: bool = False,
) -> None:
    """Write the full training state at `point` to `path` (`last.pt`).

    Args:
        path: Where to write (atomically).
        snapshot: `snapshot` at `point`.
        optimizer: Its state is saved.
        scheduler: Its state is saved.
        scaler: Its state is saved, if any.
        point: Where training stands; a cut epoch's RNG states are saved with it.
        best_metric: The best frame-mAP so far, or None.
        eval_pending: The evaluation at `point` stopped before it finished; a resumed run owes it.
    """
    training_state = {
        "best_metric": best_metric,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": ckpt.rng_state(),
        "epoch_batches": point.epoch_batches,
        "epoch_rng": point.rngs,
        "eval_pending": eval_pending,
    }
    ckpt.save_checkpoint(path, {**snapshot, **training_state})


def save_best(path: Path, snapshot: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Write the weights and the `metrics` of an evaluation to `path` (`best.pt`): no optimizer
    state, as `evad eval` and fine-tuning read it."""
    ckpt.save_checkpoint(path, {**snapshot, "metrics": metrics})


@dataclass
class Resumed:
    """Where a run starts: at the beginning, or where the checkpoint it resumes stopped."""

    point: StopPoint = field(default_factory=lambda: StopPoint(0))
    global_step: int = 0
    best: float | None = None
    epoch_rng: Any = None  # this process's RNG state at the cut of `point`'s epoch
    eval_pending: bool = False  # the last epoch's evaluation stopped before it finished


def check_training_state(state: dict[str, Any], source: Path) -> None:
    """Refuse a `last.pt` whose training entries are missing or of the wrong kind (a damaged or
    hand-edited file) before anything is built: resuming from it failed with a KeyError or
    TypeError deep inside the optimizer or scheduler. A checkpoint without an optimizer state
    (`best.pt`) is left to `restore`, which says to resume from last.pt."""
    if "optimizer" not in state:
        return
    required = ("epoch", "global_step", "optimizer", "scheduler", "rng")
    for key in required:
        if key not in state:
            raise UserError(f"{source}: damaged evad checkpoint (it has no {key!r} entry)")
    for key in ("epoch", "global_step", "epoch_batches"):
        value = state.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(
                f"{source}: damaged evad checkpoint (its {key!r} entry is {value!r}, not a count)"
            )
    epoch_rng = state.get("epoch_rng")
    kinds = {
        "optimizer": isinstance(state["optimizer"], dict),
        "scheduler": isinstance(state["scheduler"], dict),
        "rng": isinstance(state["rng"], dict),
        "scaler": isinstance(state.get("scaler"), dict | None),
        "epoch_rng": epoch_rng is None
        or (isinstance(epoch_rng, list) and all(isinstance(r, dict) for r in epoch_rng)),
        "best_metric": isinstance(state.get("best_metric"), int | float | None)
        and not isinstance(state.get("best_metric"), bool),
    }
    for key, good in kinds.items():
        if not good:
            kind = type(state[key]).__name__
            raise UserError(
                f"{source}: damaged evad checkpoint (its {key!r} entry is a {kind}, not what evad wrote)"
            )


def _cut_rng(rngs: list[dict[str, Any]] | None, info: distributed.DistInfo, source: Path) -> Any:
    """This process's RNG state at the cut that `source` stopped at, or None (with a warning) when
    it was saved by another number of processes."""
    if rngs is not None and len(rngs) == info.world_size:
        return rngs[info.rank]
    if info.is_main:
        logger.warning(
            "%s: its epoch was cut on %s processes, and goes on on %d: not as an uninterrupted run would",
            source,
            len(rngs) if rngs is not None else "an unknown number of",
            info.world_size,
        )
    return None


def restore(
    state: dict[str, Any],
    source: Path,
    info: distributed.DistInfo,
    num_classes: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    epoch_steps: int,
    tc: TrainConfig,
) -> Resumed:
    """Load checkpoint `source`'s training state into the model, optimizer, scheduler, scaler and
    RNGs, and move the schedule to where that run stopped, counted in this run's `epoch_steps`."""
    stored = state.get("dataset", {}).get("num_classes")
    if stored is not None and stored != num_classes:
        raise UserError(f"{source}: trained on {stored} classes, the dataset has {num_classes}")
    ckpt.load_model_state(model, state["model"], str(source))
    if "optimizer" not in state:
        raise UserError(f"{source}: holds no training state (use last.pt to resume)")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    start_epoch, global_step = state["epoch"], state["global_step"]
    skip_batches = int(state.get("epoch_batches", 0))
    resumed_rng = _cut_rng(state.get("epoch_rng"), info, source) if skip_batches else None
    ckpt.set_rng_state(state["rng"])
    # Where the schedule goes on: epochs done at this run's steps per epoch, which differ from
    # the saved run's when the processes, batch size, accum_steps or data changed.
    position = start_epoch * epoch_steps + math.ceil(skip_batches / tc.accum_steps)
    if position != global_step:
        log_info(
            f"{source}: the run stopped after step {global_step}; an epoch is now "
            f"{epoch_steps} optimizer steps, so the learning-rate schedule goes on at step "
            f"{position} of {tc.epochs * epoch_steps}, the same point of training"
        )
    move_schedule(scheduler, position)
    partial = f" and {skip_batches} batches of epoch {start_epoch + 1}" if skip_batches else ""
    log_info(f"resumed from {source}: {start_epoch} epochs{partial}, {global_step} steps done")
    # A cut epoch keeps every process's state as saved, so that saving again before the epoch goes
    # on (an owed evaluation) stores the same cut.
    point = StopPoint(start_epoch, skip_batches, state.get("epoch_rng") if skip_batches else None)
    return Resumed(point, global_step, state.get("best_metric"), resumed_rng, bool(state.get("eval_pending")))
