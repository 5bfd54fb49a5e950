"""Starting a training run: the state its epochs share (`RunState`) and building it (`start_run`).

`start_run` builds everything from a `Config`: the datasets and loaders (`build_data`, unless the
caller passes a `TrainData`), the model, criterion, AdamW with the head x8 groups and the warm-up +
step schedule (EVAD supplementary "Training and inference recipes", SPEC section 6). Resuming, it
restores the checkpoint's training state (`evad.engine.snapshots.restore`) before the model is
wrapped in DistributedDataParallel; then rank 0 makes the output folder and every process opens the
log. `evad.engine.train` runs the epochs over the `RunState` it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from evad.config import Config
from evad.engine import checkpoint as ckpt
from evad.engine import distributed, snapshots
from evad.engine.evaluate import build_val_data, make_model, make_postprocess
from evad.engine.optim import build_optimizer, build_scheduler, steps_per_epoch
from evad.engine.rundir import prepare_output_dir
from evad.engine.runlog import LossWindow, RunLog, log_info
from evad.errors import UserError
from evad.losses import SetCriterion
from evad.models.factory import build_criterion
from evad.models.postprocess import PostProcess


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Tell a loader's sampler (e.g. DistributedSampler) its epoch, if it listens."""
    for sampler in (
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


@dataclass
class TrainData:
    """Datasets and loaders of a run.

    Attributes:
        train_set: Has `num_classes`, `class_ids`, `class_names`.
        train_loader: Yields `evad.data.collate.Batch`; this process's shard when distributed.
        val_set: Validation dataset with its ground truth (see `evad.engine.evaluate`), or None.
        val_loader: Its loader, or None to skip evaluation.
        set_epoch: Called with (train_loader, epoch) before each epoch.
    """

    train_set: Any
    train_loader: Any
    val_set: Any = None
    val_loader: Any = None
    set_epoch: Callable[[Any, int], None] = set_sampler_epoch


def build_data(config: Config) -> TrainData:
    """Training and validation datasets and loaders of `config.data` (`evad.data.build`)."""
    from evad.data.build import build_dataset, build_loader, set_epoch

    train_set = build_dataset(config.data, "train")
    loader = build_loader(
        train_set,
        config.train.batch_size,
        train=True,
        num_workers=config.data.num_workers,
        seed=config.train.seed,
    )
    val_set, val_loader = build_val_data(config)
    if list(val_set.class_ids) != list(train_set.class_ids):
        raise UserError(
            f"data: the validation classes {list(val_set.class_ids)} differ from the training classes "
            f"{list(train_set.class_ids)}"
        )
    return TrainData(train_set, loader, val_set, val_loader, set_epoch)


@dataclass
class RunState:
    """What the epochs of a run share: what it trains and with what, and how far it has come.

    Attributes:
        config: The run's configuration (`data.root` absolute).
        info: This process's place among the run's processes, and its device.
        amp: The autocast in use: `train.amp`, or "none" off CUDA.
        progress: Show progress bars.
        data: Datasets and loaders.
        model: The detector, wrapped in DistributedDataParallel under torchrun.
        criterion: Its losses.
        postprocess: Predictions to detections, for the evaluations.
        optimizer: AdamW over the backbone and head groups.
        scheduler: The learning-rate schedule, stepped once per optimizer step.
        scaler: The fp16 gradient scaler, or None.
        log: Where `log.jsonl` lines and TensorBoard scalars go.
        dataset: The classes, as checkpoints store them.
        global_step: Optimizer steps done.
        best: The best frame-mAP so far, or None.
        point: Where training stands (whole epochs, or a cut one).
        loss_window: The loss sums since the last `log.jsonl` train line, carried from one epoch
            into the next.
    """

    config: Config
    info: distributed.DistInfo
    amp: str
    progress: bool
    data: TrainData
    model: nn.Module
    criterion: SetCriterion
    postprocess: PostProcess
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    log: RunLog
    dataset: dict[str, Any]
    global_step: int
    best: float | None
    point: snapshots.StopPoint
    loss_window: LossWindow = field(default_factory=LossWindow)

    @property
    def out_dir(self) -> Path:
        """Where the run writes (`config.output_dir`)."""
        return Path(self.config.output_dir)


def start_run(
    config: Config,
    info: distributed.DistInfo,
    data: TrainData | None,
    state: dict[str, Any] | None,
    source: Path | None,
    clear: bool,
    progress: bool,
) -> tuple[RunState, snapshots.Resumed]:
    """Build a run: its data (unless given), model, criterion, optimizer and schedule, with the
    checkpoint `state` read from `source` restored when resuming; then make the output folder
    (rank 0; `clear` removes an earlier run's files) and open the log."""
    tc = config.train
    out_dir = Path(config.output_dir)
    device = info.device
    amp = tc.amp
    if amp != "none" and device.type != "cuda":
        log_info(f"train.amp={amp} needs CUDA; training in float32 on {device.type}")
        amp = "none"

    if data is None:
        data = build_data(config)
    torch.manual_seed(tc.seed)  # the initial weights depend on the seed alone
    num_classes = int(data.train_set.num_classes)
    model_cfg, model = make_model(config, num_classes)
    model.to(device)
    criterion = build_criterion(model_cfg).to(device)
    postprocess = make_postprocess(config, model_cfg)
    if config.model.pretrained and state is None:
        from evad.weights import load_pretrained

        log_info(load_pretrained(model, config.model.pretrained).summary())

    optimizer = build_optimizer(model, tc.base_lr, tc.weight_decay, tc.head_lr_mult, tc.betas)
    epoch_steps = steps_per_epoch(len(data.train_loader), tc.accum_steps)
    total_steps = tc.epochs * epoch_steps
    scheduler = build_scheduler(
        optimizer, total_steps, tc.warmup_fraction, tc.warmup_start_factor, tc.lr_steps, tc.lr_gamma
    )
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    resumed = snapshots.Resumed()
    if state is not None:
        resumed = snapshots.restore(
            state, source, info, num_classes, model, optimizer, scheduler, scaler, epoch_steps, tc
        )
    if info.distributed:
        model = DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )

    best = resumed.best
    if best is not None and info.is_main and not (out_dir / ckpt.BEST).exists():
        # A checkpoint resumed into a new folder: its best frame-mAP is that of a best.pt in the
        # folder it came from, so no evaluation here would write best.pt unless it did better.
        log_info(
            f"{out_dir} holds no {ckpt.BEST}: the best frame-mAP of {source} ({100 * best:.2f}) is "
            f"not this folder's, and the next evaluation writes {out_dir / ckpt.BEST}"
        )
        best = None
    if state is not None:
        best = distributed.broadcast_object(best)
    if info.is_main:
        prepare_output_dir(out_dir, config, clear)
    distributed.barrier()
    run_log = RunLog(out_dir, resumed.global_step if state is not None else None, tc.tensorboard)
    run = RunState(
        config=config,
        info=info,
        amp=amp,
        progress=progress,
        data=data,
        model=model,
        criterion=criterion,
        postprocess=postprocess,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        log=run_log,
        dataset=snapshots.dataset_info(data.train_set),
        global_step=resumed.global_step,
        best=best,
        point=resumed.point,
    )
    return run, resumed
