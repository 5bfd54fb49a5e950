"""Box and tube overlaps of the UCF101-24 / JHMDB protocol (SPEC section 11), with the +1 pixel rule.

A box ``(x1, y1, x2, y2)`` covers ``(x2 - x1 + 1) * (y2 - y1 + 1)`` pixels. The spatio-temporal IoU of
two tubes is their temporal IoU (frame ranges, +1) times the mean per-frame IoU over the frames they
share. IoUs are computed in the dtype numpy promotes the operands to, as the reference computes them.
"""

from __future__ import annotations

import numpy as np


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``(..., 4)`` broadcast against each other, with the +1 pixel rule.

    Args:
        a: boxes ``x1, y1, x2, y2`` in pixels.
        b: boxes broadcastable against ``a``.

    Returns:
        The IoUs, in the dtype numpy promotes ``a`` and ``b`` to.
    """
    width = np.maximum(0, np.minimum(a[..., 2] + 1, b[..., 2] + 1) - np.maximum(a[..., 0], b[..., 0]))
    height = np.maximum(0, np.minimum(a[..., 3] + 1, b[..., 3] + 1) - np.maximum(a[..., 1], b[..., 1]))
    inter = width * height
    return inter / (_area(a) + _area(b) - inter)


def suppression_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`box_iou` in the reference NMS's arithmetic: ``min(x2, x2') - max(x1, x1') + 1`` rather than
    ``min(x2 + 1, x2' + 1) - max(x1, x1')``. The two round differently in float32, and the decayed
    scores, hence their ties and order, must match the reference's to the last bit."""
    width = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    height = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = width * height
    return inter / (_area(a) + _area(b) - inter)


def spatiotemporal_iou(a: np.ndarray, b: np.ndarray) -> float | np.floating:
    """Temporal IoU times the mean per-frame IoU over the common frames (0 if there are none).

    Args:
        a: tube ``(L, 5)`` of rows ``frame, x1, y1, x2, y2`` on consecutive frames.
        b: another tube.

    Returns:
        The spatio-temporal IoU (a numpy scalar in the operands' dtype, or 0.0).
    """
    start, end = max(a[0, 0], b[0, 0]), min(a[-1, 0], b[-1, 0])
    if end < start:
        return 0.0
    temporal = (end - start + 1) / (max(a[-1, 0], b[-1, 0]) - min(a[0, 0], b[0, 0]) + 1)
    # Tubes cover consecutive frames, so a frame's row is its offset from the first frame.
    common_a = a[int(start - a[0, 0]) : int(end - a[0, 0]) + 1, 1:5]
    common_b = b[int(start - b[0, 0]) : int(end - b[0, 0]) + 1, 1:5]
    return np.mean(box_iou(common_a, common_b)) * temporal
