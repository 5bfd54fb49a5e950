"""Clip and box transforms shared by training, evaluation and detection (SPEC section 1)."""

from __future__ import annotations


def resized_size(height: int, width: int, short_side: int, max_long_side: int = 1333) -> tuple[int, int]:
    """(h, w) after scaling the short side to `short_side`, the long side capped at `max_long_side`.

    Aspect ratio is kept; sizes are rounded to the nearest pixel.

    >>> resized_size(360, 640, 256)
    (256, 455)
    >>> resized_size(100, 2000, 256)
    (67, 1333)
    """
    if height <= 0 or width <= 0 or short_side <= 0:
        raise ValueError(f"sizes must be positive, got {height}x{width} -> {short_side}")
    scale = short_side / min(height, width)
    if max(height, width) * scale > max_long_side:
        scale = max_long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))
