"""Drawing detections on video frames: boxes, track ids and action labels (OpenCV)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def track_color(track_id: int) -> tuple[int, int, int]:
    """A saturated RGB colour for `track_id`; neighbouring ids get well-separated hues."""
    hue = (track_id * 0.618033988749895) % 1.0  # golden-ratio steps spread hues evenly
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(255 * r), round(255 * g), round(255 * b)


def _text_scale(height: int, width: int) -> tuple[float, int]:
    """Font scale and stroke width that stay readable from 100 px to 4K frames."""
    scale = float(np.clip(min(height, width) / 900, 0.3, 1.2))
    return scale, max(1, round(scale * 2))


def draw_label(image: np.ndarray, lines: Sequence[str], x: int, y: int, color: tuple[int, int, int]) -> None:
    """Draw `lines` of text on a filled `color` box whose bottom-left corner is near (x, y).

    The box is moved inside the frame where it would stick out; the text is black or white,
    whichever contrasts more with `color`.
    """
    if not lines:
        return
    height, width = image.shape[:2]
    scale, thickness = _text_scale(height, width)
    sizes = [cv2.getTextSize(line, _FONT, scale, thickness) for line in lines]
    line_h = max(h + base for (_, h), base in sizes) + 2
    box_w = max(w for (w, _), _ in sizes) + 4
    box_h = line_h * len(lines) + 2
    left = int(np.clip(x, 0, max(width - box_w, 0)))
    top = int(np.clip(y - box_h, 0, max(height - box_h, 0)))
    cv2.rectangle(image, (left, top), (left + box_w, top + box_h), color, cv2.FILLED)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    for i, ((_, h), _) in enumerate(sizes):
        baseline = top + 1 + i * line_h + h + 1
        cv2.putText(image, lines[i], (left + 2, baseline), _FONT, scale, ink, thickness, cv2.LINE_AA)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[Sequence[str]],
    track_ids: Sequence[int] | None = None,
) -> np.ndarray:
    """Draw boxes and their label lines on an RGB frame, in place.

    Args:
        image: (H, W, 3) uint8 RGB frame (C-contiguous, writable).
        boxes: (K, 4) xyxy boxes in the frame's pixels.
        labels: K lists of text lines, drawn above each box (inside it at the top edge).
        track_ids: K track ids choosing each box's colour; box order if None.

    Returns:
        `image`.
    """
    height, width = image.shape[:2]
    _, thickness = _text_scale(height, width)
    # (K, 4), or (0,) with no boxes -> (K, 4)
    for k, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        color = track_color(int(track_ids[k]) if track_ids is not None else k + 1)
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
        draw_label(image, labels[k], x1, y1, color)
    return image
