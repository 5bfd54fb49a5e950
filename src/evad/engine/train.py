"""The training run: `train` (EVAD supplementary "Training and inference recipes", SPEC section 6).

`train(config)` builds everything from a `Config` (datasets and loaders, model, criterion, AdamW
with the head x8 groups, the warm-up + step schedule), wraps the model in DistributedDataParallel
under torchrun, and runs the epochs: gradient accumulation (`accum_steps` micro-batches per
optimizer step, `no_sync` on all but the last), optional bf16/fp16 autocast on CUDA (fp16 with a
gradient scaler), optional gradient clipping, evaluation every `eval_every` epochs, every epoch after
`eval_after` and after the last, and checkpoints (see `evad.engine.checkpoint`). One epoch is
`evad.engine.epoch.train_one_epoch`; the checks of the output directory before a run starts or
resumes are in `evad.engine.rundir`.

Output directory::

    config.yaml      the run's config
    log.jsonl        {"type": "train", "step", "epoch", "lr", "loss", "loss_ce", ...} every
                     `log_every` steps (means over the steps since the previous line, averaged
                     over processes), {"type": "epoch", ...} and {"type": "eval", "frame_mAP", ...}
    tensorboard/     the same scalars, when the `tensorboard` package is installed
    eval/            detections.csv and metrics.json of the latest evaluation
    last.pt, best.pt

Exact resume: every epoch starts by reseeding python, numpy and torch from (seed, epoch, rank) and
telling the loader its epoch, so what an epoch draws (shuffling, augmentation, drop path) does not
depend on what ran before it. A run stopped after epoch k and resumed from `last.pt` therefore
produces the same weights as an uninterrupted run (bit-identical on the CPU). An epoch that
`train.max_steps` cuts short is saved as cut: `last.pt` holds the micro-batches of it already trained
on and the RNG state at the cut, and a run resumed with a larger `max_steps` (or none) draws those
batches again without training on them, restores that state and goes on as if never stopped.

Example::

    evad train --config configs/ava_vit-b_16x4_kr0.7.yaml output_dir=out/kr0.7
    torchrun --nproc_per_node 8 "$(which evad)" train --config configs/ava_vit-b_16x4_kr0.7.yaml
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from evad.config import Config, TrainConfig
from evad.engine import checkpoint as ckpt
from evad.engine import distributed, snapshots
from evad.engine.epoch import train_one_epoch
from evad.engine.evaluate import build_val_data, evaluate, make_model, make_postprocess
from evad.engine.optim import build_optimizer, build_scheduler, steps_per_epoch
from evad.engine.rundir import (
    EVAL_DIR,
    check_creatable,
    check_resumed_settings,
    check_same_run,
    prepare_output_dir,
    resolve_resume,
)
from evad.engine.runlog import RunLog, log_info
from evad.errors import UserError, raised_alike_by_every_process
from evad.models.factory import build_criterion

logger = logging.getLogger(__name__)

METRIC = "frame_mAP"


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


def is_eval_epoch(epoch: int, tc: TrainConfig) -> bool:
    """Whether the 1-based `epoch` ends with an evaluation (the last one always does)."""
    return epoch % tc.eval_every == 0 or (tc.eval_after is not None and epoch > tc.eval_after)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed python, numpy and torch (CPU and CUDA) from (seed, epoch, rank)."""
    value = int(np.random.SeedSequence([seed, epoch + 1, rank]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)  # noqa: NPY002 (transforms may draw from the global generator)
    torch.manual_seed(value)


# ----------------------------------------------------------------------------------------------
# The whole run


def train(
    config: Config,
    *,
    resume: str | None = None,
    overwrite: bool = False,
    data: TrainData | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (and evaluate) the model described by `config`.

    Args:
        config: The run's configuration. A relative `data.root` is made absolute against the
            current folder before config.yaml and the checkpoints store it.
        resume: A checkpoint to continue from, "auto" for `output_dir/last.pt` if it exists, or
            None for a new run.
        overwrite: Start a new run even if `output_dir` holds checkpoints (they are deleted).
        data: Datasets and loaders; built from `config.data` by `build_data` when None.
        progress: Show progress bars.

    Returns:
        `epochs` done (whole ones), `epoch_batches` (micro-batches trained on in the next one, when
        `max_steps` cut it), `global_step`, `best_metric` (frame-mAP, or None without evaluation), the
        last evaluation's `metrics` and the trained `model` (unwrapped).

    Raises:
        UserError: For an output directory with results but neither `resume` nor `overwrite`, or
            an unreadable or mismatching checkpoint.
    """
    config = with_absolute_data_root(config)
    with raised_alike_by_every_process():
        info = distributed.init_from_env(config.train.device)
    phase = _Phase()
    try:
        return _train(config, info, resume, overwrite, data, progress, phase)
    except UserError as err:
        # Before the epochs every process reads the same config, files and checkpoint, so every
        # process raises alike; a frame that fails to decode in training is one process's error.
        err.every_process = err.every_process or not phase.training
        raise
    finally:
        distributed.cleanup(info)


def with_absolute_data_root(config: Config) -> Config:
    """`config` with `data.root` made absolute against the current folder, so that config.yaml and
    the checkpoints name the data the run read wherever `evad eval` or a resumed run starts."""
    root = os.path.abspath(config.data.root)
    return dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))


@dataclass
class _Phase:
    training: bool = False


def _train(
    config: Config,
    info: distributed.DistInfo,
    resume: str | None,
    overwrite: bool,
    data: TrainData | None,
    progress: bool,
    phase: _Phase,
) -> dict[str, Any]:
    tc = config.train
    out_dir = Path(config.output_dir)
    check_creatable(out_dir)
    resume_path, clear = resolve_resume(out_dir, resume, overwrite, config.to_yaml())
    state = ckpt.load_checkpoint(resume_path) if resume_path is not None else None
    if state is not None:
        check_same_run(out_dir, resume_path)
        check_resumed_settings(state, config, resume_path)
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
            state, resume_path, info, num_classes, model, optimizer, scheduler, scaler, epoch_steps, tc
        )
    start_epoch, global_step, best = resumed.point.epochs, resumed.global_step, resumed.best
    resumed_rng = resumed.epoch_rng
    owed_evaluation = resumed.eval_pending

    if info.distributed:
        model = DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )

    if info.is_main:
        prepare_output_dir(out_dir, config, clear)
    distributed.barrier()
    run_log = RunLog(out_dir, global_step if state is not None else None, tc.tensorboard)
    dataset_info = snapshots.dataset_info(data.train_set)

    def save_last(point: snapshots.StopPoint, eval_pending: bool = False) -> None:
        """The full training state at `point` (rank 0 only); `eval_pending` marks an evaluation
        there that a resumed run still owes."""
        snapshots.save_last(
            out_dir / ckpt.LAST,
            snapshots.snapshot(model, config, dataset_info, point, global_step),
            optimizer,
            scheduler,
            scaler,
            point=point,
            best_metric=best,
            eval_pending=eval_pending,
        )

    def evaluate_epoch(point: snapshots.StopPoint) -> dict[str, Any]:
        """Evaluate, log, and keep `best.pt`; a failed or interrupted evaluation does not cost the
        epoch's training: `last.pt` is saved first, owing the evaluation (every epoch reseeds, and a
        cut epoch keeps the RNG state of its cut, so resuming from it stays exact)."""
        nonlocal best
        try:
            result = evaluate(
                model,
                data.val_loader,
                data.val_set,
                postprocess,
                keep_rate=config.eval.keep_rate,
                out_dir=out_dir / EVAL_DIR,
                device=device,
                amp=amp,
                progress=progress,
                ava_max_per_keyframe=config.eval.ava_max_per_keyframe,
                ava_input_order=config.eval.ava_input_order,
            )
        except BaseException:
            if info.is_main:
                save_last(point, eval_pending=True)
                log_info(
                    f"evaluation at step {global_step} stopped; {out_dir / ckpt.LAST} holds the training"
                )
            raise
        summary = {k: v for k, v in result.items() if k != "report"}
        run_log.write({"type": "eval", "step": global_step, "epoch": point.epoch_number, **summary})
        log_info(f"epoch {point.epoch_number}: frame-mAP {100 * result[METRIC]:.2f}")
        if not math.isnan(result[METRIC]) and (best is None or result[METRIC] > best):  # NaN: no GT
            best = result[METRIC]
            if info.is_main:
                snapshots.save_best(
                    out_dir / ckpt.BEST,
                    snapshots.snapshot(model, config, dataset_info, point, global_step),
                    summary,
                )
        return result

    metrics: dict[str, Any] | None = None
    point = resumed.point
    num_batches = len(data.train_loader)
    phase.training = True
    try:
        if owed_evaluation and data.val_loader is not None:
            log_info(f"evaluating at step {global_step}, where the evaluation stopped before it finished")
            metrics = evaluate_epoch(point)
            if info.is_main:
                save_last(point)
            distributed.barrier()
        for epoch in range(start_epoch, tc.epochs):
            if tc.max_steps is not None and global_step >= tc.max_steps:
                break
            seed_epoch(tc.seed, epoch, info.rank)
            data.set_epoch(data.train_loader, epoch)
            start = time.perf_counter()
            step_before, skip = global_step, point.epoch_batches
            global_step, means = train_one_epoch(
                model,
                criterion,
                data.train_loader,
                optimizer,
                scheduler,
                epoch=epoch,
                global_step=global_step,
                device=device,
                accum_steps=tc.accum_steps,
                clip_grad_norm=tc.clip_grad_norm,
                amp=amp,
                scaler=scaler,
                log_every=tc.log_every,
                max_steps=tc.max_steps,
                run_log=run_log,
                progress=progress,
                skip_batches=skip,
                rng_after_skip=resumed_rng if skip else None,
            )
            # Micro-batches of this epoch trained on, by this and earlier runs (a last group may be short).
            trained = min(skip + (global_step - step_before) * tc.accum_steps, num_batches)
            if trained < num_batches:  # cut by max_steps: a resumed run goes on from here
                point = snapshots.StopPoint(epoch, trained, distributed.all_gather_objects(ckpt.rng_state()))
            else:
                point = snapshots.StopPoint(epoch + 1)
            last = point.epochs == tc.epochs or (tc.max_steps is not None and global_step >= tc.max_steps)
            run_log.write(
                {
                    "type": "epoch",
                    "step": global_step,
                    "epoch": epoch + 1,
                    "time_s": time.perf_counter() - start,
                    **means,
                }
            )
            cut = f" (cut after {trained} of {num_batches} batches)" if point.epoch_batches else ""
            log_info(f"epoch {epoch + 1}/{tc.epochs}{cut}: loss {means.get('loss', float('nan')):.4f}")

            if data.val_loader is not None and (last or is_eval_epoch(epoch + 1, tc)):
                metrics = evaluate_epoch(point)
            if info.is_main and ((epoch + 1) % tc.checkpoint_every == 0 or last):
                save_last(point)
            distributed.barrier()
            if last:
                break
    finally:
        run_log.close()
    return {
        "epochs": point.epochs,
        "epoch_batches": point.epoch_batches,
        "global_step": global_step,
        "best_metric": best,
        "metrics": metrics,
        "model": ckpt.unwrap(model),
    }
