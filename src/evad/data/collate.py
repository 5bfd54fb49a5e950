"""Batching clips of different sizes: zero-padding at the bottom/right to a multiple of 32 (SPEC 1, 8b).

The model sees padded clips but scales, clips and post-processes boxes with each clip's unpadded
size (`image_sizes`), as the released checkpoints were trained.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size`, the last one shorter if they do not divide evenly."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Batch:
    """A padded batch of clips with their targets.

    Attributes:
        clips: (B, 3, T, Hp, Wp) float32, zero-padded at the bottom and right; Hp and Wp are
            multiples of the size divisor.
        image_sizes: (B, 2) int64 unpadded (h, w) of each clip.
        targets: Per clip, {"boxes": (M, 4) x1, y1, x2, y2 in pixels of the resized clip,
            "labels": (M, K) multi-hot}.
        videos: Video of each clip.
        timestamps: Keyframe of each clip (AVA second, or 1-based frame number).
        orig_sizes: (B, 2) int64 (H0, W0) of the source frames.

    Example:
        >>> batch = batch.to("cuda")  # doctest: +SKIP
        >>> outputs = model(batch.clips, image_sizes=batch.image_sizes)  # doctest: +SKIP
        >>> losses = criterion(outputs, batch.targets)  # doctest: +SKIP
    """

    clips: torch.Tensor
    image_sizes: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    videos: list[str]
    timestamps: list[int]
    orig_sizes: torch.Tensor

    def __len__(self) -> int:
        return len(self.videos)

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Batch:
        """The batch with its tensors on `device` (asynchronous copies from pinned memory)."""
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) so that `to(device)` can copy asynchronously."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn: Any) -> Batch:
        return Batch(
            clips=fn(self.clips),
            image_sizes=fn(self.image_sizes),
            targets=[{key: fn(value) for key, value in target.items()} for target in self.targets],
            videos=self.videos,
            timestamps=self.timestamps,
            orig_sizes=fn(self.orig_sizes),
        )


def padded_size(height: int, width: int, size_divisor: int = 32) -> tuple[int, int]:
    """(height, width) rounded up to multiples of `size_divisor`.

    >>> padded_size(256, 341)
    (256, 352)
    """
    return -(-height // size_divisor) * size_divisor, -(-width // size_divisor) * size_divisor


def collate(samples: Sequence[Mapping[str, Any]], size_divisor: int = 32) -> Batch:
    """Stack dataset items into a `Batch`, zero-padding clips to a common multiple of `size_divisor`.

    Args:
        samples: Items of an `AvaDataset` / `TubeDataset` (keys "clip", "boxes", "labels", "video",
            "timestamp", "orig_size").
        size_divisor: Padded heights and widths are multiples of this.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    shapes = {tuple(s["clip"].shape[:2]) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"clips differ in channels or frames: {sorted(shapes)}")
    sizes = [tuple(s["clip"].shape[2:]) for s in samples]
    height, width = padded_size(max(h for h, _ in sizes), max(w for _, w in sizes), size_divisor)
    channels, frames = shapes.pop()
    clips = samples[0]["clip"].new_zeros((len(samples), channels, frames, height, width))
    for clip, sample, (h, w) in zip(clips, samples, sizes, strict=True):
        clip[:, :, :h, :w] = sample["clip"]
    return Batch(
        clips=clips,
        image_sizes=torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2),  # B (h, w) -> (B, 2)
        targets=[{"boxes": s["boxes"], "labels": s["labels"]} for s in samples],
        videos=[str(s["video"]) for s in samples],
        timestamps=[int(s["timestamp"]) for s in samples],
        # B (H0, W0) -> (B, 2)
        orig_sizes=torch.tensor([tuple(s["orig_size"]) for s in samples], dtype=torch.int64).reshape(-1, 2),
    )
