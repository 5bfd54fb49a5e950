"""The calls that `evad bench` measures and their synthetic inputs (EVAD Table 2, Fig. 8).

An inference step is one forward pass under inference mode; a training step is forward, the
set-prediction losses on synthetic targets, backward and an AdamW step, as training takes it. Both
run under autocast to bf16 / fp16 when asked (`DTYPES`), on random clips made once per input size.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from evad.bench.measure import Step

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_clips(batch: int, num_frames: int, img_size: int, device: torch.device, seed: int = 0) -> Tensor:
    """Random normalised clips (batch, 3, num_frames, img_size, img_size)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, num_frames, img_size, img_size, generator=generator).to(device)


def synthetic_targets(
    batch: int, img_size: int, num_classes: int, device: torch.device, max_boxes: int = 3, seed: int = 0
) -> list[dict[str, Tensor]]:
    """One to `max_boxes` random person boxes per clip, each with one to three action labels.

    Boxes are xyxy pixels inside the image, at least a tenth of its side wide and high; labels are
    multi-hot rows of `num_classes`, the format `SetCriterion` expects.
    """
    generator = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(batch):
        m = int(torch.randint(1, max_boxes + 1, (), generator=generator))
        size = img_size * (0.1 + 0.4 * torch.rand(m, 2, generator=generator))  # (m, 2) width, height
        corner = (img_size - size) * torch.rand(m, 2, generator=generator)  # (m, 2) x1, y1
        labels = torch.zeros(m, num_classes)
        for row in labels:
            count = min(num_classes, int(torch.randint(1, 4, (), generator=generator)))
            row[torch.randperm(num_classes, generator=generator)[:count]] = 1.0
        boxes = torch.cat([corner, corner + size], dim=1)  # (m, 4) xyxy
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return targets


def autocast(device: torch.device, dtype: str) -> Any:
    """torch.autocast to bf16 / fp16 on `device` (CUDA or CPU); a no-op for fp32."""
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def inference_step(
    model: nn.Module, clips: Tensor, keep_rate: float, device: torch.device, dtype: str
) -> Step:
    """One forward pass of `model` (detector or backbone) under inference mode and autocast."""

    def step() -> None:
        with torch.inference_mode(), autocast(device, dtype):
            model(clips, keep_rate=keep_rate)

    return step


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    clips: Tensor,
    targets: list[dict[str, Tensor]],
    keep_rate: float,
    device: torch.device,
    dtype: str,
    scaler: torch.amp.GradScaler | None = None,
) -> Step:
    """One training step as `evad.engine.epoch.train_one_epoch` takes it: forward under autocast,
    fp32 losses, backward, AdamW step. Gradients are released at the end so that the memory before
    the next step is weights + optimizer state only."""
    from evad.engine.predict import to_float32

    def step() -> None:
        with autocast(device, dtype):
            outputs = model(clips, keep_rate=keep_rate)
        total = criterion.weighted_total(criterion(to_float32(outputs), targets))
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
