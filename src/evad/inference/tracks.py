"""Linking detections of consecutive keyframes into tracks, for drawing stable identities.

EVAD detects actors on each keyframe independently; to show who is who in an annotated video, a
box takes the track id of the box it overlaps most on the previous keyframe. Greedy matching by
IoU (highest first, IoU >= 0.3) is enough at one keyframe per second for people who move less than
their own width; anything unmatched starts a new track. This is for display, not evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from evad.ops.boxes import box_iou


def greedy_iou_match(previous: np.ndarray, current: np.ndarray, iou_threshold: float) -> dict[int, int]:
    """Pairs (current index -> previous index) taken greedily in descending IoU, IoU >= threshold.

    Args:
        previous: (N, 4) xyxy boxes.
        current: (M, 4) xyxy boxes.
        iou_threshold: Minimum IoU of a pair.
    """
    if len(previous) == 0 or len(current) == 0:
        return {}
    iou = box_iou(
        torch.as_tensor(previous, dtype=torch.float64), torch.as_tensor(current, dtype=torch.float64)
    )[0]
    iou = torch.nan_to_num(iou, nan=0.0).numpy()  # (N, M); two empty boxes give NaN
    pairs: dict[int, int] = {}
    # Stable sort so equal IoUs resolve by (previous, current) order and ids never depend on chance.
    order = np.argsort(-iou, axis=None, kind="stable")
    used_prev: set[int] = set()
    for flat in order:
        p, c = divmod(int(flat), iou.shape[1])
        if iou[p, c] < iou_threshold:
            break
        if p in used_prev or c in pairs:
            continue
        pairs[c] = p
        used_prev.add(p)
    return pairs


class IouTracker:
    """Assign track ids to each keyframe's boxes in turn.

    Ids start at 1 and are never reused; new tracks are numbered in box order.

    Args:
        iou_threshold: Minimum IoU with a box of the previous keyframe to continue its track.
    """

    def __init__(self, iou_threshold: float = 0.3) -> None:
        self.iou_threshold = iou_threshold
        self._boxes = np.zeros((0, 4))
        self._ids = np.zeros(0, dtype=np.int64)
        self._next_id = 1

    def update(self, boxes: np.ndarray) -> np.ndarray:
        """Track ids (K,) for the (K, 4) xyxy boxes of the next keyframe."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # (K, 4), or (0,) if none -> (K, 4)
        pairs = greedy_iou_match(self._boxes, boxes, self.iou_threshold)
        ids = np.zeros(len(boxes), dtype=np.int64)
        for c in range(len(boxes)):
            if c in pairs:
                ids[c] = self._ids[pairs[c]]
            else:
                ids[c] = self._next_id
                self._next_id += 1
        self._boxes, self._ids = boxes, ids
        return ids


def link_tracks(boxes_per_keyframe: Iterable[np.ndarray], iou_threshold: float = 0.3) -> list[np.ndarray]:
    """Track ids for the boxes of consecutive keyframes (see `IouTracker`)."""
    tracker = IouTracker(iou_threshold)
    return [tracker.update(boxes) for boxes in boxes_per_keyframe]
