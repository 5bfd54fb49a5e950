"""Running a detector over a loader: per-keyframe detections on the CPU, gathered across processes.

`run_inference` detects on this process's share of the batches and post-processes the predictions
to original-frame pixels; `gather_detections` collects every process's keyframes on rank 0, dropping
the repeats a distributed sampler pads its last shard with. `evad.engine.evaluate` scores the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from evad.engine import distributed
from evad.engine.checkpoint import unwrap
from evad.models.postprocess import PostProcess


@dataclass
class KeyframeDetections:
    """The detections of one keyframe, on the CPU.

    Attributes:
        video: Video id.
        timestamp: AVA second, or frame number (from 1) for tube datasets.
        boxes: (K, 4) float32 xyxy in pixels of the original frame.
        boxes_normalized: (K, 4) float64 boxes divided by (W, H, W, H) of the original frame.
        person_scores: (K,) float32 person probabilities.
        action_scores: (K, C) float32 action probabilities, column j for `dataset.class_ids[j]`.
        image_size: Original (height, width).
    """

    video: str
    timestamp: int
    boxes: np.ndarray
    boxes_normalized: np.ndarray
    person_scores: np.ndarray
    action_scores: np.ndarray
    image_size: tuple[int, int]


def autocast_context(device: torch.device, amp: str) -> Any:
    """torch.autocast for "bf16" / "fp16" on CUDA; a no-op elsewhere."""
    if device.type != "cuda" or amp == "none":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_float32(outputs: Any) -> Any:
    """Floating tensors in a nested prediction dict cast to float32 (losses and scores in fp32)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: to_float32(v) for k, v in outputs.items()}
    if isinstance(outputs, list | tuple):
        return type(outputs)(to_float32(v) for v in outputs)
    return outputs


@torch.no_grad()
def run_inference(
    model: nn.Module,
    loader: Iterable,
    postprocess: PostProcess,
    keep_rate: float | None = None,
    device: torch.device | None = None,
    amp: str = "none",
    progress: bool = True,
) -> list[KeyframeDetections]:
    """Detect on every batch of `loader` (this process's share when distributed).

    Args:
        model: The detector, possibly wrapped in DistributedDataParallel.
        loader: Yields `evad.data.collate.Batch` (clips, image_sizes, videos, timestamps, orig_sizes).
        postprocess: Turns predictions into detections in original-frame pixels.
        keep_rate: Token keep rate; None uses the model's.
        device: Where the model runs; defaults to the device of its parameters.
        amp: "none", "bf16" or "fp16" autocast on CUDA.
        progress: Show a progress bar (rank 0, interactive terminals only).
    """
    net = unwrap(model)
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    results: list[KeyframeDetections] = []
    show = progress and distributed.is_main_process()
    bar = tqdm(loader, desc="eval", unit="batch", leave=False, disable=None if show else True)
    try:
        for batch in bar:
            batch = batch.to(device)
            with autocast_context(device, amp):
                outputs = net(batch.clips, batch.image_sizes, keep_rate=keep_rate)
            detections = postprocess(to_float32(outputs), target_sizes=batch.orig_sizes)
            for i, det in enumerate(detections):
                results.append(
                    KeyframeDetections(
                        video=str(batch.videos[i]),
                        timestamp=int(batch.timestamps[i]),
                        boxes=det.boxes.cpu().numpy().astype(np.float32),
                        boxes_normalized=det.normalized_boxes().cpu().double().numpy(),
                        person_scores=det.person_scores.cpu().numpy().astype(np.float32),
                        action_scores=det.action_scores.cpu().numpy().astype(np.float32),
                        image_size=tuple(int(s) for s in det.image_size),
                    )
                )
    finally:
        bar.close()
        net.train(was_training)
    return results


def gather_detections(results: Sequence[KeyframeDetections]) -> list[KeyframeDetections]:
    """All processes' detections on rank 0 (empty elsewhere), one per keyframe, sorted by key.

    A distributed sampler pads the last shard with repeated keyframes; the duplicates go here.
    """
    gathered = distributed.all_gather_objects(list(results))
    if not distributed.is_main_process():
        return []
    unique: dict[tuple[str, int], KeyframeDetections] = {}
    for part in gathered:
        for item in part:
            unique.setdefault((item.video, item.timestamp), item)
    return [unique[key] for key in sorted(unique)]
