"""Clip and box transforms shared by training, evaluation and detection (SPEC section 1).

A clip is resized (short side to S, long side capped), optionally flipped, then scaled to [0, 1]
and normalised; boxes follow the same geometry. Boxes are x1, y1, x2, y2 in continuous pixel
coordinates (0 is the left edge of the first pixel, W the right edge of the last), so a resize
multiplies them by the size ratio and a flip maps x to W - x.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch


def resized_size(height: int, width: int, short_side: int, max_long_side: int = 1333) -> tuple[int, int]:
    """(h, w) after scaling the short side to `short_side`, the long side capped at `max_long_side`.

    Aspect ratio is kept; sizes are rounded to the nearest pixel, halves up, as the official
    loader does (Python's `round` would take 340.5 to 340, not 341).

    >>> resized_size(360, 640, 256)
    (256, 455)
    >>> resized_size(100, 2000, 256)
    (67, 1333)
    >>> resized_size(512, 681, 256)
    (256, 341)
    """
    if height <= 0 or width <= 0 or short_side <= 0:
        raise ValueError(f"sizes must be positive, got {height}x{width} -> {short_side}")
    scale = short_side / min(height, width)
    if max(height, width) * scale > max_long_side:
        scale = max_long_side / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def planar_frames(frames: np.ndarray, size: tuple[int, int], flip: bool = False) -> np.ndarray:
    """uint8 frames (T, H, W, 3) -> (3, T, h, w), bilinearly resized and optionally mirrored.

    Frame by frame with OpenCV on uint8, before any float conversion: 4x fewer bytes to move than
    resizing floats, and no strided whole-clip copies.
    """
    height, width = size
    planar = np.empty((frames.shape[3], len(frames), height, width), dtype=np.uint8)
    for t, frame in enumerate(frames):
        if frame.shape[:2] != (height, width):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        if flip:
            frame = cv2.flip(frame, 1)
        for channel, plane in enumerate(cv2.split(frame)):
            planar[channel, t] = plane
    return planar


def scale_boxes(boxes: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """Boxes (M, 4) x1, y1, x2, y2 multiplied by the horizontal and vertical size ratios."""
    return boxes * np.asarray([scale_x, scale_y, scale_x, scale_y], dtype=boxes.dtype)


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes (M, 4) mirrored in a frame of `width` pixels: x1' = W - x2, x2' = W - x1."""
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def normalize_clip(planar: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (3, T, h, w) RGB -> float32 (3, T, h, w) of (x / 255 - mean) / std per channel."""
    clip = np.empty(planar.shape, dtype=np.float32)
    for channel, (m, s) in enumerate(zip(mean, std, strict=True)):
        np.multiply(planar[channel], np.float32(1.0 / (255.0 * s)), out=clip[channel], dtype=np.float32)
        clip[channel] -= np.float32(m / s)
    return torch.from_numpy(clip)


def jitter_colors(planar: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Brightness, contrast and saturation of a uint8 (3, T, h, w) RGB clip, one factor each.

    The whole clip changes alike (every frame by the same factors), in the order brightness
    (x * b), contrast (towards the clip's mean grey by c) and saturation (towards each pixel's
    grey by s): the three operations of torchvision's ColorJitter, in a fixed order; factor 1
    leaves a step out. Returns uint8.
    """
    brightness, contrast, saturation = (np.float32(f) for f in factors)
    x = planar.astype(np.float32) * brightness
    # (3,) -> (3, 1, 1, 1): luma weights broadcast over the (3, T, h, w) clip
    weights = np.array([0.299, 0.587, 0.114], np.float32).reshape(3, 1, 1, 1)
    x = np.clip(x, 0, 255)
    grey = (x * weights).sum(0, keepdims=True)  # (1, T, h, w)
    x = np.clip(grey.mean() + contrast * (x - grey.mean()), 0, 255)
    grey = (x * weights).sum(0, keepdims=True)
    x = np.clip(grey + saturation * (x - grey), 0, 255)
    return np.rint(x).astype(np.uint8)


class ClipTransform:
    """Resize (with scale jitter), horizontal flip, colour jitter and normalisation of a clip.

    Random choices draw from `generator`, or from torch's global RNG when it is None; DataLoader
    workers seed that RNG from the loader's generator, so a seeded loader gives the same clips.

    Args:
        short_sides: Short-side sizes; one is drawn uniformly per clip (several = scale jitter).
        max_long_side: Cap on the long side after resizing.
        flip_prob: Probability of a horizontal flip.
        mean, std: Per-channel normalisation of RGB in [0, 1].
        color_jitter: Strength a of the colour jitter: brightness, contrast and saturation factors
            drawn uniformly from [1 - a, 1 + a] per clip (`jitter_colors`); 0 (default) leaves
            colours alone. Not in the paper's recipe; PySlowFast's AVA loader has a similar option.

    Example:
        >>> train = ClipTransform(short_sides=(224, 256), flip_prob=0.5)
        >>> test = ClipTransform(short_sides=(256,))
    """

    def __init__(
        self,
        short_sides: Sequence[int],
        max_long_side: int = 1333,
        flip_prob: float = 0.0,
        mean: Sequence[float] = (0.45, 0.45, 0.45),
        std: Sequence[float] = (0.225, 0.225, 0.225),
        color_jitter: float = 0.0,
    ) -> None:
        if not short_sides:
            raise ValueError("short_sides must name at least one size")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.short_sides = tuple(int(s) for s in short_sides)
        self.max_long_side = int(max_long_side)
        self.flip_prob = float(flip_prob)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if not 0.0 <= color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter}")
        self.color_jitter = float(color_jitter)

    def __call__(
        self, frames: np.ndarray, boxes: np.ndarray, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Transform a clip and its boxes consistently.

        Args:
            frames: (T, H, W, 3) RGB uint8.
            boxes: (M, 4) x1, y1, x2, y2 in pixels of the source frames.
            generator: Source of the random draws (scale, flip, colours).

        Returns:
            The clip (3, T, h, w) float32, the boxes (M, 4) float32 in pixels of the resized clip,
            and (h, w).
        """
        source_height, source_width = frames.shape[1:3]
        choice = 0
        if len(self.short_sides) > 1:
            choice = int(torch.randint(len(self.short_sides), (1,), generator=generator))
        short_side = self.short_sides[choice]
        height, width = resized_size(source_height, source_width, short_side, self.max_long_side)
        boxes = scale_boxes(np.asarray(boxes, dtype=np.float32), width / source_width, height / source_height)
        flip = self.flip_prob > 0 and float(torch.rand((), generator=generator)) < self.flip_prob
        if flip:
            boxes = flip_boxes(boxes, width)
        planar = planar_frames(frames, (height, width), flip)
        if self.color_jitter > 0:
            a = self.color_jitter
            factors = 1 - a + 2 * a * torch.rand(3, generator=generator, dtype=torch.float64)
            planar = jitter_colors(planar, factors.tolist())
        clip = normalize_clip(planar, self.mean, self.std)
        return (
            clip,
            # (M, 4), or (0,) with no boxes -> (M, 4)
            torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)).reshape(-1, 4),
            (height, width),
        )

    def __repr__(self) -> str:
        return (
            f"ClipTransform(short_sides={self.short_sides}, max_long_side={self.max_long_side}, "
            f"flip_prob={self.flip_prob}, color_jitter={self.color_jitter})"
        )
