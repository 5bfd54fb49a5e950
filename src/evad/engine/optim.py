"""AdamW parameter groups and the step learning-rate schedule of EVAD (SPEC section 6).

Parameter groups follow the official `slowfast/models/optimizer.py::get_parameter_groups`
(MCG-NJU/EVAD), translated to evad's parameter names:

- Head (learning rate x `head_lr_mult`, 8): the official `det_head.*` parameters, which in evad are
  `localization.stages.*` (the six dynamic-interaction stages, `det_head.s0_headseries`) and
  `classification.*` (`encoder_to_decoder`, `mask_token` and the context refinement decoder, or
  the linear baseline head). The backbone, the FPN and the learned initial proposals
  (`localization.init_proposal_features` / `_boxes`, top level in the official model) keep the
  base rate.
- No weight decay: every 1-D parameter (norm weights, biases, `q_bias` / `v_bias`), names ending
  in `.bias`, and tokens or embeddings named `mask_token`, `cls_token` or `pos_embed` (the official
  rule: the models' `no_weight_decay()`; evad's position tables are buffers, so `mask_token` and the
  CLS token of the `pruning="cls"` ablation match). The initial proposals are 2-D and decayed, as in
  the official model.

The schedule is a function of the fraction of training done, so any number of epochs (or steps
per epoch) gives the same shape: a linear warm-up from `warmup_start_factor` to the post-warm-up
factor over the first `warmup_fraction` of the optimizer steps, then x`gamma` once the fraction
reaches each of `lr_steps`. The official policy (`lr_policy.py`, `steps_with_relative_lrs` with
STEPS [0, 5, 8] of 12 epochs, warm-up over 2 epochs from 2.5e-6) is the default: step k of N uses
the rate of fractional epoch 12 k / N, and the decay applies from exactly epoch 5 (k / N >= 5/12).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

#: Parameter-name prefixes trained with the head learning rate.
HEAD_PREFIXES = ("localization.stages.", "classification.")
#: Name fragments of token / embedding parameters exempt from weight decay.
NO_DECAY_NAMES = ("mask_token", "cls_token", "pos_embed")
# Tolerance on fractions: 5/12 of 120 steps is step 50 even if 5/12 was written as 0.4166666666666667
# (at most half a step, see `lr_factor`).
_EPS = 1e-6


def is_head_parameter(name: str) -> bool:
    """Whether parameter `name` (of the unwrapped model) gets the head learning rate."""
    return name.startswith(HEAD_PREFIXES)


def uses_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Whether parameter `name` is decayed: matrices and kernels, but no biases, norms or tokens."""
    if param.ndim <= 1 or name.endswith(".bias"):
        return False
    return not any(token in name for token in NO_DECAY_NAMES)


def param_groups(model: nn.Module, weight_decay: float, base_lr: float, head_lr_mult: float) -> list[dict]:
    """Split trainable parameters into up to four AdamW groups (decay x head).

    Args:
        model: The detector (not wrapped in DistributedDataParallel).
        weight_decay: Weight decay of the decayed groups.
        base_lr: Learning rate of non-head parameters.
        head_lr_mult: Learning-rate multiplier of head parameters.

    Returns:
        Groups with `params`, `names`, `lr`, `weight_decay` and `name`, in a fixed order
        (backbone-decay, backbone-no-decay, head-decay, head-no-decay), empty groups left out.
    """
    groups: dict[tuple[bool, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (is_head_parameter(name), uses_weight_decay(name, param))
        if key not in groups:
            head, decay = key
            groups[key] = {
                "name": f"{'head' if head else 'base'}_{'decay' if decay else 'no_decay'}",
                "params": [],
                "names": [],
                "lr": base_lr * (head_lr_mult if head else 1.0),
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    order = [(False, True), (False, False), (True, True), (True, False)]
    return [groups[key] for key in order if key in groups]


def build_optimizer(
    model: nn.Module,
    base_lr: float,
    weight_decay: float = 1e-4,
    head_lr_mult: float = 8.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, ...)`."""
    groups = param_groups(model, weight_decay, base_lr, head_lr_mult)
    return torch.optim.AdamW(groups, lr=base_lr, betas=betas, weight_decay=weight_decay)


def lr_factor(
    step: int,
    total_steps: int,
    warmup_fraction: float = 2 / 12,
    warmup_start_factor: float = 0.1,
    lr_steps: Sequence[float] = (5 / 12, 8 / 12),
    gamma: float = 0.1,
) -> float:
    """Multiplier of every group's learning rate at optimizer step `step` (0-based) of `total_steps`.

    Example:
        >>> [round(lr_factor(k, 12), 4) for k in (0, 1, 2, 4, 5, 7, 8, 11)]
        [0.1, 0.55, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    """
    progress = step / max(total_steps, 1)
    # The slack for fractions written as decimals stays under half a step: 1e-6 of a run of over
    # 500k steps (AVA on one GPU at batch 2: 1.26M) would move each boundary a step early.
    eps = min(_EPS, 0.5 / max(total_steps, 1))

    def decay(p: float) -> float:
        return gamma ** sum(p >= s - eps for s in lr_steps)

    if progress < warmup_fraction - eps:
        end = decay(warmup_fraction)
        return warmup_start_factor + (end - warmup_start_factor) * progress / warmup_fraction
    return decay(progress)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 2 / 12,
    warmup_start_factor: float = 0.1,
    lr_steps: Sequence[float] = (5 / 12, 8 / 12),
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR applying `lr_factor`; call `step()` once per optimizer step.

    Args:
        optimizer: Its groups' `lr` are the rates after warm-up.
        total_steps: Optimizer steps in the whole training (epochs x steps per epoch).
        warmup_fraction: As in `lr_factor`.
        warmup_start_factor: As in `lr_factor`.
        lr_steps: As in `lr_factor`.
        gamma: As in `lr_factor`.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    steps = [float(s) for s in lr_steps]

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, warmup_fraction, warmup_start_factor, steps, gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def move_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> None:
    """Put `scheduler` at optimizer step `step` and give its optimizer's groups that step's rates
    (a resumed optimizer holds the rates of the step it was saved at, under the old schedule)."""
    scheduler.last_epoch = step
    rates = [
        base * factor(step) for factor, base in zip(scheduler.lr_lambdas, scheduler.base_lrs, strict=True)
    ]
    for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    scheduler._last_lr = rates  # what get_last_lr() reports


def steps_per_epoch(num_batches: int, accum_steps: int) -> int:
    """Optimizer steps of an epoch of `num_batches` micro-batches (a last partial group counts)."""
    return max(1, math.ceil(num_batches / accum_steps))
