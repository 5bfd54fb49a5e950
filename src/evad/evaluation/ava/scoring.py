"""Matching detections to ground truth and per-class AP: the AVA frame-mAP and the result type.

:func:`score_detections` takes ground truth prepared by `evad.evaluation.ava.selection` and the
detections it selects, pairs each detection with the boxes of its keyframe and class (single
best-IoU box, first on ties; a hit needs IoU >= 0.5 and a box no earlier detection took), and
computes each class's PASCAL VOC all-points AP and the mean over the classes with ground truth
(SPEC section 10; the full rules are listed in `evad.evaluation.ava`). :class:`AvaResult` holds
the numbers, next to the protocol's constants and the AVA group means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evad.evaluation.ava.selection import GroundTruth, select_detections, warn
from evad.evaluation.ava.table import AvaTable

IOU_THRESHOLD = 0.5
MAX_DETECTIONS_PER_KEYFRAME = 50
# AVA's three action groups, by class id (inclusive bounds).
GROUPS: dict[str, tuple[float, float]] = {
    "person_movement": (-np.inf, 14),
    "object_manipulation": (15, 63),
    "person_interaction": (64, np.inf),
}


@dataclass(frozen=True)
class AvaResult:
    """Frame-mAP at IoU 0.5 and its parts.

    Attributes:
        mean_ap: Mean AP over the label map's classes that have ground truth (a fraction).
        per_class: AP of each of those classes, by class id.
        groups: Mean AP of the classes of each of :data:`GROUPS` (None if it has none, and all None
            for a label map with no id beyond the first group, which is not AVA's).
        class_names: Name of each evaluated class.
        num_groundtruth: Ground-truth boxes per evaluated class.
        num_detections: Scored detections per evaluated class (after the cap).
        counts: Bookkeeping of rows read, ignored and scored.
        max_per_keyframe: The cap on detections per keyframe that was applied (0: none).
        input_order: Whether each keyframe's detections were matched in their input order rather
            than by descending score.
    """

    mean_ap: float
    per_class: dict[int, float]
    groups: dict[str, float | None]
    class_names: dict[int, str]
    num_groundtruth: dict[int, int]
    num_detections: dict[int, int]
    counts: dict[str, int] = field(default_factory=dict)
    max_per_keyframe: int = MAX_DETECTIONS_PER_KEYFRAME
    input_order: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"mAP", "per_class": {"<id>": AP}, "groups", ...}``."""
        return {
            "mAP": self.mean_ap,
            "per_class": {str(k): v for k, v in self.per_class.items()},
            "groups": dict(self.groups),
            "class_names": {str(k): v for k, v in self.class_names.items()},
            "num_groundtruth": {str(k): v for k, v in self.num_groundtruth.items()},
            "num_detections": {str(k): v for k, v in self.num_detections.items()},
            "counts": dict(self.counts),
            "protocol": {
                "iou_threshold": IOU_THRESHOLD,
                "max_detections_per_keyframe": self.max_per_keyframe,
                "match_order": "input" if self.input_order else "score",
            },
        }


def _iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Row-wise IoU of x1, y1, x2, y2 boxes, with the official arithmetic (no +1)."""
    heights = np.maximum(0.0, np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]))
    widths = np.maximum(0.0, np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0]))
    intersection = heights * widths
    area_det = (det[:, 3] - det[:, 1]) * (det[:, 2] - det[:, 0])
    area_gt = (gt[:, 3] - gt[:, 1]) * (gt[:, 2] - gt[:, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / (area_det + area_gt - intersection)


def _average_precision(scores: np.ndarray, true_positive: np.ndarray, num_gt: int) -> float:
    """PASCAL VOC all-points AP; ties in score fall as numpy's default argsort leaves them."""
    if scores.size == 0:
        return 0.0
    hits = true_positive[np.argsort(scores)[::-1]].astype(np.int64)
    cum_tp = np.cumsum(hits)
    cum_fp = np.cumsum(1 - hits)
    precision = cum_tp.astype(np.float64) / (cum_tp + cum_fp)
    recall = cum_tp.astype(np.float64) / num_gt
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # right-max envelope
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def score_detections(gt: GroundTruth, det: AvaTable, cap: int, input_order: bool = False) -> AvaResult:
    """Score detections against ground truth from
    :func:`~evad.evaluation.ava.selection.prepare_groundtruth` (:func:`evad.evaluation.ava.evaluate_ava`
    after its preparation; `cap` is its `max_per_keyframe`).

    Raises:
        ValueError: If `input_order` is asked for with a cap.
    """
    if input_order and cap:
        raise ValueError(
            "input_order reproduces EVAD's own evaluation, which keeps every detection: "
            f"max_per_keyframe must be 0, got {cap}"
        )
    counts: dict[str, int] = {"detection_rows": len(det)}
    key, rank, score, class_position, boxes, image_rank, status = select_detections(
        gt, det, counts, cap, input_order
    )
    num_classes = len(gt.class_ids)

    # Zero-width or inverted boxes took a cap slot and are dropped now.
    valid = (boxes[:, 1] < boxes[:, 3]) & (boxes[:, 0] < boxes[:, 2])
    counts["invalid_box_rows"] = int(np.count_nonzero(~valid))
    key, rank, score, class_position, boxes = (a[valid] for a in (key, rank, score, class_position, boxes))

    # Pair each detection with the ground-truth boxes of its keyframe and class.
    code = status[key] * num_classes + class_position
    group = np.minimum(np.searchsorted(gt.codes, code), max(len(gt.codes) - 1, 0))
    has_gt = gt.codes[group] == code if len(gt.codes) else np.zeros(len(code), dtype=bool)
    num_pairs = np.where(has_gt, gt.counts[group], 0)
    det_of_pair = np.repeat(np.arange(len(code)), num_pairs)
    pair_offset = np.arange(len(det_of_pair)) - np.repeat(np.cumsum(num_pairs) - num_pairs, num_pairs)
    gt_of_pair = np.repeat(gt.starts[group], num_pairs) + pair_offset
    iou = _iou(boxes[det_of_pair], gt.boxes[gt_of_pair])
    # First maximum per detection, NaN counting as the maximum (np.argmax's rule).
    comparable = np.where(np.isnan(iou), np.inf, iou)
    segment_start = (np.cumsum(num_pairs) - num_pairs)[has_gt]
    best = np.zeros(len(code), dtype=np.float64)
    best_gt = np.full(len(code), -1, dtype=np.int64)
    if len(iou):
        segment_max = np.maximum.reduceat(comparable, segment_start)
        at_max = np.flatnonzero(comparable == np.repeat(segment_max, num_pairs[has_gt]))
        first = at_max[np.r_[True, det_of_pair[at_max][1:] != det_of_pair[at_max][:-1]]]
        best[det_of_pair[first]] = iou[first]
        best_gt[det_of_pair[first]] = gt_of_pair[first]
    # A box goes to the first detection (by keyframe order) that reaches it with IoU >= 0.5.
    candidate = np.flatnonzero(has_gt & (best >= IOU_THRESHOLD))
    candidate = candidate[np.lexsort((rank[candidate], key[candidate]))]
    _, first_claim = np.unique(best_gt[candidate], return_index=True)
    true_positive = np.zeros(len(code), dtype=bool)
    true_positive[candidate[first_claim]] = True

    # Per class, detections in the official concatenation order: image order, then rank.
    order = np.lexsort((rank, image_rank[key], class_position))
    class_bounds = np.searchsorted(class_position[order], np.arange(num_classes + 1))
    per_class: dict[int, float] = {}
    num_detections: dict[int, int] = {}
    for c, class_id in enumerate(gt.class_ids.tolist()):
        if gt.num_gt[c] == 0:
            continue
        members = order[class_bounds[c] : class_bounds[c + 1]]
        per_class[class_id] = _average_precision(score[members], true_positive[members], int(gt.num_gt[c]))
        num_detections[class_id] = len(members)
    counts["scored_detections"] = int(sum(num_detections.values()))
    counts["true_positives"] = int(np.count_nonzero(true_positive))
    counts["groundtruth_boxes"] = int(gt.num_gt.sum())
    counts["groundtruth_unknown_class_rows"] = gt.unknown_class_rows
    if counts["detection_rows"] == 0:
        warn(f"{det.source}: no detections; every class scores AP 0")
    elif np.all(np.any(det.boxes > 1, axis=1)):
        warn(
            f"{det.source}: every box has a coordinate above 1; AVA boxes are normalised to [0, 1], "
            "these look like pixels"
        )
    outside = (det.scores < 0) | (det.scores > 1)
    if outside.any():  # ranked as they are, as officially; usually a ground-truth file (person ids)
        first = int(np.argmax(outside))
        where = f"{det.source}:{int(det.lines[first])}" if det.lines is not None else det.source
        warn(
            f"{where}: {int(outside.sum())} scores lie outside [0, 1] (this one, {det.scores[first]:g}, "
            "first); is this a ground-truth file, whose 8th column is a person id?"
        )
    elif counts["detection_rows"] and np.all(det.scores == 1):
        warn(
            f"{det.source}: every detection scores 1.0 (7-column rows have no score), so the AP ranks "
            "them in file order"
        )
    inverted = (det.boxes[:, 2] < det.boxes[:, 0]) | (det.boxes[:, 3] < det.boxes[:, 1])
    if inverted.any():  # dropped below, as officially; usually swapped columns
        first = int(np.argmax(inverted))
        where = f"{det.source}:{int(det.lines[first])}" if det.lines is not None else det.source
        warn(
            f"{where}: {int(inverted.sum())} boxes have x2 < x1 or y2 < y1 (this one first); dropped, "
            "as the official scorer drops them"
        )
    return AvaResult(
        mean_ap=_mean_ap(per_class, int(gt.class_ids[-1])),
        per_class=per_class,
        groups=_group_means(per_class, int(gt.class_ids[-1])),
        class_names={k: gt.names[k] for k in per_class},
        num_groundtruth={k: int(gt.num_gt[c]) for c, k in enumerate(gt.class_ids.tolist()) if k in per_class},
        num_detections=num_detections,
        counts=counts,
        max_per_keyframe=cap,
        input_order=input_order,
    )


def _mean_ap(per_class: Mapping[int, float], largest_id: int) -> float:
    # ids below 1 (a label map given as a dict) index no array
    if largest_id > 100_000 or min(per_class, default=1) < 1:
        return float(np.mean(list(per_class.values())))
    # The same summation as the official NaN-skipping mean over an array indexed by class id.
    padded = np.full(largest_id, np.nan)
    padded[np.array(list(per_class)) - 1] = list(per_class.values())
    return float(np.nanmean(padded))


def _group_means(per_class: Mapping[int, float], largest_id: int) -> dict[str, float | None]:
    """Mean AP per AVA group; all None for a label map whose ids stop within the first group (not
    AVA's: the synthetic benchmark's 13 classes would all count as person movement)."""
    means: dict[str, float | None] = {}
    for name, (low, high) in GROUPS.items():
        if largest_id <= GROUPS["person_movement"][1]:
            means[name] = None
            continue
        values = [ap for class_id, ap in per_class.items() if low <= class_id <= high]
        means[name] = float(np.mean(values)) if values else None
    return means
