"""Oracle analysis: is a detector limited by localization or by classification?

The class-queries paper (papers/classification-matters-class-queries.txt, Fig. 1 and Table 7)
rescores a detector's output twice: once with its boxes replaced by the ground-truth boxes they are
matched to ("GT boxes"), once with its action scores replaced by the matched ground truth's labels
("GT labels"). The larger gain names the part worth improving.

Here both work on AVA detection files, so they apply to any detector's output:

* Matching, per keyframe: the distinct detected boxes and the distinct ground-truth boxes are paired
  one to one by the Hungarian algorithm on IoU (largest total IoU; pairs without overlap are never
  matched). The paper matches with the training cost, which needs the model's logits; IoU is what a
  detections file has.
* GT boxes: a matched detection takes its ground-truth box; its scores are unchanged. Unmatched
  detections stay as they are.
* GT labels: a matched detection with IoU >= 0.5 scores its confidence (its largest action score) on
  the ground truth's classes and 0 on the others; every other detection scores 0 on every class, as the
  ground truth gives it no label. Ranking within a class therefore still follows the detector.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from evad.evaluation.ava import (
    IOU_THRESHOLD,
    AvaResult,
    AvaTable,
    evaluate_ava,
    read_detections,
    read_exclusions,
    read_groundtruth,
    read_labelmap,
)


@dataclass
class OracleResult:
    """Frame-mAP of the detections as they are, with GT boxes and with GT labels."""

    detector: AvaResult
    gt_boxes: AvaResult
    gt_labels: AvaResult

    def to_dict(self) -> dict[str, Any]:
        return {
            "mAP": self.detector.mean_ap,
            "mAP_gt_boxes": self.gt_boxes.mean_ap,
            "mAP_gt_labels": self.gt_labels.mean_ap,
            "per_class": {str(k): v for k, v in self.detector.per_class.items()},
            "per_class_gt_boxes": {str(k): v for k, v in self.gt_boxes.per_class.items()},
            "per_class_gt_labels": {str(k): v for k, v in self.gt_labels.per_class.items()},
        }


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M) IoU of normalised xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def _groups(table: AvaTable) -> dict[Any, np.ndarray]:
    """Keyframe key -> row indices of the table."""
    if len(table) == 0:
        return {}
    order = np.argsort(table.row_key, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(table.row_key[order]) != 0])
    bounds = np.r_[starts, len(order)]
    return {table.keys[table.row_key[order[s]]]: order[s:e] for s, e in pairwise(bounds.tolist())}


def match_boxes(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching on IoU: (matched detection index, its IoU) per detection, -1 / 0 if none.

    Returns:
        gt_index: (N,) index into `gt_boxes` of each detection's match, -1 if unmatched.
        iou: (N,) IoU with that match (0 if unmatched).
    """
    gt_index = np.full(len(det_boxes), -1, dtype=np.int64)
    matched_iou = np.zeros(len(det_boxes))
    if len(det_boxes) and len(gt_boxes):
        iou = _iou(det_boxes, gt_boxes)
        rows, cols = linear_sum_assignment(-iou)
        overlap = iou[rows, cols] > 0
        gt_index[rows[overlap]] = cols[overlap]
        matched_iou[rows[overlap]] = iou[rows, cols][overlap]
    return gt_index, matched_iou


def oracle_tables(groundtruth: AvaTable, detections: AvaTable) -> tuple[AvaTable, AvaTable]:
    """The detections with GT boxes, and with GT labels (see the module doc)."""
    gt_rows = _groups(groundtruth)
    boxes = detections.boxes.copy()
    scores = np.zeros_like(detections.scores)
    for key, rows in _groups(detections).items():
        # Distinct boxes of this keyframe: a detection is one box with a score per class.
        det_boxes, det_of_row = np.unique(detections.boxes[rows], axis=0, return_inverse=True)
        det_of_row = det_of_row.reshape(-1)  # (R,), or (R, 1) on NumPy 2.0.0 -> (R,)
        truth = gt_rows.get(key, np.zeros(0, dtype=np.int64))
        gt_boxes, gt_of_row = np.unique(groundtruth.boxes[truth], axis=0, return_inverse=True)
        gt_of_row = gt_of_row.reshape(-1)  # (G,), or (G, 1) on NumPy 2.0.0 -> (G,)
        match, iou = match_boxes(det_boxes, gt_boxes)
        matched = match[det_of_row] >= 0
        boxes[rows[matched]] = gt_boxes[match[det_of_row[matched]]]
        confidence = np.zeros(len(det_boxes))
        np.maximum.at(confidence, det_of_row, detections.scores[rows])
        true_labels = [set(groundtruth.labels[truth[gt_of_row == g]].tolist()) for g in range(len(gt_boxes))]
        for r, d in zip(rows, det_of_row, strict=True):
            g = match[d]
            if g >= 0 and iou[d] >= IOU_THRESHOLD and detections.labels[r] in true_labels[g]:
                scores[r] = confidence[d]
    return replace(detections, boxes=boxes), replace(detections, scores=scores)


def oracle_analysis(
    groundtruth: str | os.PathLike,
    detections: str | os.PathLike,
    labelmap: str | os.PathLike,
    exclusions: str | os.PathLike | None = None,
) -> OracleResult:
    """Frame-mAP of a detections file as is, with GT boxes and with GT labels.

    Raises:
        UserError: As :func:`evaluate_ava` does (unreadable files, no ground truth of the label map).
    """
    gt = read_groundtruth(groundtruth)
    det = read_detections(detections)
    names = read_labelmap(labelmap)
    excluded = read_exclusions(exclusions) if exclusions is not None else set()
    detector = evaluate_ava(gt, det, names, excluded)  # first: it rejects unusable ground truth
    with_boxes, with_labels = oracle_tables(gt, det)
    return OracleResult(
        detector,
        evaluate_ava(gt, with_boxes, names, excluded),
        evaluate_ava(gt, with_labels, names, excluded),
    )
