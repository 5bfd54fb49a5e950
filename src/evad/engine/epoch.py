"""One training epoch: `train_one_epoch` (EVAD supplementary "Training and inference recipes", SPEC
section 6).

A pass over the loader in optimizer steps of `accum_steps` micro-batches (DistributedDataParallel's
`no_sync` on all but the last of a group), with optional bf16/fp16 autocast on CUDA (fp16 with a
gradient scaler) and gradient clipping, a stop on a non-finite loss, and a `log.jsonl` line every
`log_every` steps. The box losses of a step are normalised over the whole group on all processes
(`group_box_normalizer`), so that accumulation on fewer GPUs gives the official 8-GPU gradient.
`evad.engine.train` runs the epochs; an epoch that an earlier run cut short (`max_steps`) is
resumed by drawing the batches already trained on without training on them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from evad.data.collate import batched
from evad.engine import checkpoint as ckpt
from evad.engine import distributed
from evad.engine.predict import autocast_context, to_float32
from evad.engine.runlog import LossWindow, RunLog
from evad.losses import SetCriterion


def _group_lrs(optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    """Current learning rates of the base (backbone) and head groups of `optim.param_groups`."""
    groups = optimizer.param_groups
    base = next((g["lr"] for g in groups if not str(g.get("name", "")).startswith("head")), groups[0]["lr"])
    head = next((g["lr"] for g in groups if str(g.get("name", "")).startswith("head")), base)
    return base, head


def group_box_normalizer(targets: Sequence[Sequence[Mapping[str, Tensor]]], device: torch.device) -> float:
    """Normaliser of the box losses for one optimizer step of G micro-batches on W processes.

    The official recipe divides each GPU's summed L1 / GIoU terms by the box count averaged over
    its GPUs (at least 1). Accumulating G micro-batches on W processes reproduces one batch on
    G x W GPUs only if every micro-batch divides by the group's count averaged over G x W; dividing
    each by its own count would give micro-batches with few people more weight.

    Args:
        targets: The group's micro-batches on this process, each a list of per-clip targets
            with `boxes`.
        device: Where the count is all-reduced (the process group's device).

    Returns:
        max(boxes in the group on all processes / (G x W), 1).
    """
    count = torch.tensor([float(sum(len(t["boxes"]) for batch in targets for t in batch))], device=device)
    world = distributed.get_world_size()
    if world > 1:
        torch.distributed.all_reduce(count)
    return max(count.item() / (len(targets) * world), 1.0)


def train_one_epoch(
    model: nn.Module,
    criterion: SetCriterion,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    epoch: int,
    global_step: int,
    device: torch.device,
    accum_steps: int = 1,
    clip_grad_norm: float | None = None,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    log_every: int = 20,
    max_steps: int | None = None,
    run_log: RunLog | None = None,
    progress: bool = True,
    skip_batches: int = 0,
    rng_after_skip: Mapping[str, Any] | None = None,
    window: LossWindow | None = None,
) -> tuple[int, dict[str, float]]:
    """Train for one pass over `loader`.

    Each optimizer step accumulates the gradients of up to `accum_steps` micro-batches, each loss
    divided by the group's size (a last, shorter group of an epoch divides by its own size).
    Gradients are zeroed at the start of a group, so after the call they hold the last group's.
    The box losses of every micro-batch are divided by the group's box count per micro-batch and
    process (`group_box_normalizer`), so that G micro-batches on W processes give the gradient of
    one batch on G x W processes, as the official recipe's 8 GPUs do.

    Args:
        model: The detector, possibly DDP-wrapped.
        criterion: Set criterion; its `weighted_total` is the loss.
        loader: Yields batches with `clips`, `image_sizes`, `targets` and `to(device)`.
        optimizer: Stepped once per group.
        scheduler: Stepped once per group (it counts optimizer steps).
        epoch: 0-based epoch, for logs.
        global_step: Optimizer steps done before this epoch.
        device: Where the model lives.
        accum_steps: Micro-batches per optimizer step.
        clip_grad_norm: Max total gradient norm, or None.
        amp: "none", "bf16" or "fp16" autocast (CUDA only).
        scaler: Gradient scaler for fp16, else None.
        log_every: Optimizer steps between log lines.
        max_steps: Stop once the global step reaches it.
        run_log: Where log lines go (None: nowhere).
        progress: Show a progress bar (rank 0, interactive terminals only).
        skip_batches: Micro-batches at the start of the epoch that an earlier run already trained
            on (an epoch that `max_steps` cut short): they are drawn from `loader`, so that the
            rest comes out as it would have, but not trained on.
        rng_after_skip: The RNG state (`checkpoint.rng_state`) to restore once they are drawn:
            where the earlier run stopped.
        window: The loss sums since the previous log line, carried over from the epoch before
            (its last steps after that line go into the next line) and updated in place; None
            starts afresh.

    Returns:
        The new global step and the epoch's mean loss terms (averaged over processes).

    Raises:
        FloatingPointError: If the loss becomes NaN or infinite.
    """
    model.train()
    criterion.train()
    is_ddp = isinstance(model, DistributedDataParallel)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    world = distributed.get_world_size()
    num_batches = len(loader)
    show = progress and distributed.is_main_process()
    bar = tqdm(desc=f"epoch {epoch + 1}", unit="batch", total=num_batches, disable=None if show else True)
    batches = iter(loader)
    try:
        for _ in range(min(skip_batches, num_batches)):
            next(batches)
            bar.update()
        if rng_after_skip is not None:
            ckpt.set_rng_state(rng_after_skip)
        window = LossWindow() if window is None else window
        window.restart_clock()  # clips_per_s: this epoch's training only
        epoch_window = LossWindow()
        for group in batched(batches, accum_steps):  # the last group of an epoch may be shorter
            group_size = len(group)
            num_boxes = group_box_normalizer([batch.targets for batch in group], device)
            optimizer.zero_grad(set_to_none=True)
            group_loss = None
            for m, batch in enumerate(group):
                batch = batch.to(device)
                sync = model.no_sync() if is_ddp and m < group_size - 1 else nullcontext()
                with sync:
                    with autocast_context(device, amp):
                        outputs = model(batch.clips, batch.image_sizes)
                    losses = criterion(to_float32(outputs), batch.targets, num_boxes=num_boxes)
                    total = criterion.weighted_total(losses)
                    scaled = total / group_size
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                terms = {"loss": total, **losses}
                clips = batch.clips.shape[0] * world
                window.add(terms, clips)
                epoch_window.add(terms, clips)
                group_loss = total.detach() if group_loss is None else group_loss + total.detach()
                bar.update()
            del group, batch, outputs  # the group's clips are not needed past its backward passes

            if world > 1:  # the mean over processes: every process stops alike on a NaN anywhere
                torch.distributed.all_reduce(group_loss)
            loss_value = group_loss.item() / (group_size * world)
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"loss is {loss_value} at epoch {epoch + 1}, step {global_step + 1}; stopping"
                )
            grad_norm = None
            if clip_grad_norm is not None:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip_grad_norm))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr, lr_head = _group_lrs(optimizer)
            scheduler.step()
            global_step += 1

            if global_step % log_every == 0:
                elapsed = time.perf_counter() - window.start
                record = {
                    "type": "train",
                    "step": global_step,
                    "epoch": epoch + 1,
                    "lr": lr,
                    "lr_head": lr_head,
                }
                record.update(window.means())
                record["clips_per_s"] = window.clips / max(elapsed, 1e-9)
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                if run_log is not None:
                    run_log.write(record)
                window.reset()
            rate = epoch_window.clips / max(time.perf_counter() - epoch_window.start, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", clips_s=f"{rate:.1f}", refresh=False)
            if max_steps is not None and global_step >= max_steps:
                break
    finally:
        bar.close()
    return global_step, epoch_window.means()
