"""Score-decay NMS and average precision, ordered exactly as the reference orders them.

Equal scores are common (scores saturate at 1, CSVs round them); the reference orders them with
numpy's default sort, which is not stable and whose order for equal keys depends on the numpy version
and the CPU's SIMD sort. Every sort of scores here is that same default sort applied to an array equal
to the reference's (same values, same order), so equal scores fall as they do for the reference run
with the same numpy on the same machine.
"""

from __future__ import annotations

import numpy as np

from evad.evaluation.tubes.geometry import suppression_iou

DECAY_NMS_IOU = 0.6


def reference_order(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rows by group, and within a group as the reference's ``argsort(scores)[::-1]`` orders it.

    That is descending score; the reference's sort runs on the group's rows in input order, so for
    a group with equal scores the same sort is run on the same array here.
    """
    order = np.lexsort((-scores, groups))
    sorted_groups, sorted_scores = groups[order], scores[order]
    tied = np.flatnonzero(
        (sorted_groups[1:] == sorted_groups[:-1]) & (sorted_scores[1:] == sorted_scores[:-1])
    )
    if tied.size:
        starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for g in np.unique(np.searchsorted(starts, tied, side="right") - 1):
            rows = np.sort(order[starts[g] : ends[g]])  # the group in input order
            order[starts[g] : ends[g]] = rows[np.argsort(scores[rows])[::-1]]
    return order


def group_starts(sorted_groups: np.ndarray) -> np.ndarray:
    """Index of the first row of each run of equal values in `sorted_groups`."""
    if len(sorted_groups) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])


def decay_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float = DECAY_NMS_IOU
) -> np.ndarray:
    """Score-decay NMS within each group of boxes (one group = one video, frame and class).

    A group's boxes are visited by descending score (equal scores in the order of the reference's
    ``argsort(scores)[::-1]`` over the group in input order). Each box not yet visited whose IoU
    with the visited one exceeds ``threshold`` has its score multiplied by ``1 - IoU`` and is never
    visited. No box is removed.

    Args:
        boxes: ``(N, 4)`` boxes, float32.
        scores: ``(N,)`` scores, float32.
        groups: ``(N,)`` integer group of each box; rows of a group in file order.
        threshold: IoU above which a box is decayed.

    Returns:
        ``(N,)`` decayed scores, in the dtype of ``scores``.
    """
    n = len(scores)
    decayed = scores.copy()
    order = reference_order(groups, scores)
    starts = group_starts(groups[order])
    sizes = np.diff(np.r_[starts, n])
    # Groups of equal size are processed together: one step of the visit at a time for all of them.
    for size in np.unique(sizes[sizes > 1]):
        first = starts[sizes == size]
        chunk = max(1, 2**22 // int(size) ** 2)
        for c in range(0, len(first), chunk):
            rows = order[first[c : c + chunk, None] + np.arange(size)]  # (G, m), in visiting order
            # (G, m, 4) -> (G, m, m)
            pair_iou = suppression_iou(boxes[rows][:, :, None], boxes[rows][:, None])
            weight = np.ones(rows.shape, dtype=scores.dtype)
            pending = np.ones(rows.shape, dtype=bool)  # neither visited nor decayed yet
            for r in range(size - 1):
                iou_r = pair_iou[:, r, r + 1 :]
                hit = pending[:, r, None] & pending[:, r + 1 :] & (iou_r > threshold)
                weight[:, r + 1 :][hit] = (1 - iou_r)[hit]
                pending[:, r + 1 :] &= ~hit
            decayed[rows] = scores[rows] * weight
    return decayed


def average_precision(is_tp: np.ndarray, num_positives: int) -> float:
    """Trapezoidal area under the precision-recall curve that starts at (recall 0, precision 1).

    Args:
        is_tp: ``(N,)`` whether each detection, in rank order, is a true positive.
        num_positives: number of ground-truth instances; 0 gives AP 0.

    Returns:
        The AP. Precision and recall are rounded to float32 and summed in float32, as the reference
        stores them.
    """
    if num_positives == 0:
        return 0.0
    tp = np.cumsum(is_tp)
    precision = np.ones(len(is_tp) + 1, dtype=np.float32)
    recall = np.zeros(len(is_tp) + 1, dtype=np.float32)
    precision[1:] = tp / np.arange(1, len(is_tp) + 1)
    recall[1:] = tp / num_positives
    return float(np.sum((recall[1:] - recall[:-1]) * (precision[1:] + precision[:-1]) * 0.5))
