"""The training run: `train` (EVAD supplementary "Training and inference recipes", SPEC section 6).

`train(config)` builds everything from a `Config` (datasets and loaders, model, criterion, AdamW
with the head x8 groups, the warm-up + step schedule: `evad.engine.run_state.start_run`), wraps the
model in DistributedDataParallel under torchrun, and runs the epochs: gradient accumulation
(`accum_steps` micro-batches per optimizer step, `no_sync` on all but the last), optional bf16/fp16
autocast on CUDA (fp16 with a gradient scaler), optional gradient clipping, evaluation every
`eval_every` epochs, every epoch after `eval_after` and after the last, and checkpoints (what they
hold: `evad.engine.snapshots`; how they are written: `evad.engine.checkpoint`). One epoch is
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
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evad.config import Config, TrainConfig
from evad.engine import checkpoint as ckpt
from evad.engine import distributed, snapshots
from evad.engine.epoch import train_one_epoch
from evad.engine.evaluate import evaluate
from evad.engine.run_state import RunState, TrainData, start_run
from evad.engine.rundir import (
    EVAL_DIR,
    check_creatable,
    check_resumed_settings,
    check_same_run,
    resolve_resume,
)
from evad.engine.runlog import log_info
from evad.errors import UserError, raised_alike_by_every_process

METRIC = "frame_mAP"


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
        data: Datasets and loaders; built from `config.data` by `evad.engine.run_state.build_data`
            when None.
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
    """`train` once the process group is joined; `phase.training` turns True as the epochs begin."""
    tc = config.train
    # The output folder and the checkpoint are checked before anything is built, so that a
    # mistyped command fails at once.
    out_dir = Path(config.output_dir)
    check_creatable(out_dir)
    source, clear = resolve_resume(out_dir, resume, overwrite, config.to_yaml())
    state = ckpt.load_checkpoint(source) if source is not None else None
    if state is not None:
        check_same_run(out_dir, source)
        snapshots.check_training_state(state, source)
        check_resumed_settings(state, config, source)
    run, resumed = start_run(config, info, data, state, source, clear, progress)

    metrics: dict[str, Any] | None = None
    phase.training = True
    try:
        if resumed.eval_pending and run.data.val_loader is not None:
            log_info(f"evaluating at step {run.global_step}, where the evaluation stopped before it finished")
            metrics = _evaluate(run)
            if info.is_main:
                _save_last(run)
            distributed.barrier()
        for epoch in range(resumed.point.epochs, tc.epochs):
            if _max_steps_reached(run):
                break
            _train_epoch(run, epoch, resumed.epoch_rng)
            last = run.point.epochs == tc.epochs or _max_steps_reached(run)
            if run.data.val_loader is not None and (last or is_eval_epoch(epoch + 1, tc)):
                metrics = _evaluate(run)
            if info.is_main and ((epoch + 1) % tc.checkpoint_every == 0 or last):
                _save_last(run)
            distributed.barrier()
            if last:
                break
    finally:
        run.log.close()
    return {
        "epochs": run.point.epochs,
        "epoch_batches": run.point.epoch_batches,
        "global_step": run.global_step,
        "best_metric": run.best,
        "metrics": metrics,
        "model": ckpt.unwrap(run.model),
    }


def _max_steps_reached(run: RunState) -> bool:
    """Whether the run has done its `train.max_steps` optimizer steps."""
    return run.config.train.max_steps is not None and run.global_step >= run.config.train.max_steps


def _train_epoch(run: RunState, epoch: int, resumed_rng: Any) -> None:
    """Train the 0-based `epoch`, or what is left of it when `run.point` is a cut of it, then move
    `run.global_step` and `run.point` on and log the epoch.

    `resumed_rng` is this process's RNG state at a cut that a resumed checkpoint stopped at
    (`snapshots.Resumed.epoch_rng`), restored once the batches trained before the cut are drawn.
    """
    tc = run.config.train
    seed_epoch(tc.seed, epoch, run.info.rank)
    run.data.set_epoch(run.data.train_loader, epoch)
    start = time.perf_counter()
    step_before, skip = run.global_step, run.point.epoch_batches
    run.global_step, means = train_one_epoch(
        run.model,
        run.criterion,
        run.data.train_loader,
        run.optimizer,
        run.scheduler,
        epoch=epoch,
        global_step=run.global_step,
        device=run.info.device,
        accum_steps=tc.accum_steps,
        clip_grad_norm=tc.clip_grad_norm,
        amp=run.amp,
        scaler=run.scaler,
        log_every=tc.log_every,
        max_steps=tc.max_steps,
        run_log=run.log,
        progress=run.progress,
        skip_batches=skip,
        rng_after_skip=resumed_rng if skip else None,
        window=run.loss_window,
    )
    # Micro-batches of this epoch trained on, by this and earlier runs (a last group may be short).
    num_batches = len(run.data.train_loader)
    trained = min(skip + (run.global_step - step_before) * tc.accum_steps, num_batches)
    if trained < num_batches:  # cut by max_steps: a resumed run goes on from here
        run.point = snapshots.StopPoint(epoch, trained, distributed.all_gather_objects(ckpt.rng_state()))
    else:
        run.point = snapshots.StopPoint(epoch + 1)
    run.log.write(
        {
            "type": "epoch",
            "step": run.global_step,
            "epoch": epoch + 1,
            "time_s": time.perf_counter() - start,
            **means,
        }
    )
    cut = f" (cut after {trained} of {num_batches} batches)" if run.point.epoch_batches else ""
    log_info(f"epoch {epoch + 1}/{tc.epochs}{cut}: loss {means.get('loss', float('nan')):.4f}")


def _evaluate(run: RunState) -> dict[str, Any]:
    """Evaluate at `run.point`, log, and keep `best.pt` (rank 0).

    A failed or interrupted evaluation does not cost the epoch's training: `last.pt` is saved
    first, owing the evaluation (every epoch reseeds, and a cut epoch keeps the RNG state of its
    cut, so resuming from it stays exact).
    """
    config = run.config
    try:
        result = evaluate(
            run.model,
            run.data.val_loader,
            run.data.val_set,
            run.postprocess,
            keep_rate=config.eval.keep_rate,
            out_dir=run.out_dir / EVAL_DIR,
            device=run.info.device,
            amp=run.amp,
            progress=run.progress,
            ava_max_per_keyframe=config.eval.ava_max_per_keyframe,
            ava_input_order=config.eval.ava_input_order,
        )
    except BaseException:
        if run.info.is_main:
            _save_last(run, eval_pending=True)
            log_info(
                f"evaluation at step {run.global_step} stopped; {run.out_dir / ckpt.LAST} holds the training"
            )
        raise
    summary = {k: v for k, v in result.items() if k != "report"}
    run.log.write({"type": "eval", "step": run.global_step, "epoch": run.point.epoch_number, **summary})
    log_info(f"epoch {run.point.epoch_number}: frame-mAP {100 * result[METRIC]:.2f}")
    if not math.isnan(result[METRIC]) and (run.best is None or result[METRIC] > run.best):  # NaN: no GT
        run.best = result[METRIC]
        if run.info.is_main:
            snapshots.save_best(run.out_dir / ckpt.BEST, _snapshot(run), summary)
    return result


def _snapshot(run: RunState) -> dict[str, Any]:
    """What every checkpoint of the run holds at `run.point` (`snapshots.snapshot`)."""
    return snapshots.snapshot(run.model, run.config, run.dataset, run.point, run.global_step)


def _save_last(run: RunState, eval_pending: bool = False) -> None:
    """Write `last.pt` at `run.point` (the callers make sure only rank 0 does); `eval_pending`
    marks an evaluation there that a resumed run still owes."""
    snapshots.save_last(
        run.out_dir / ckpt.LAST,
        _snapshot(run),
        run.optimizer,
        run.scheduler,
        run.scaler,
        point=run.point,
        best_metric=run.best,
        eval_pending=eval_pending,
    )
