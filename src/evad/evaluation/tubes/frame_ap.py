"""Frame-AP: a class's detections ranked over every frame of every test video (SPEC section 11).

Each detection takes the best remaining ground-truth box of its frame, which it removes on a hit.
"""

from __future__ import annotations

import numpy as np

from evad.evaluation.tubes.detections import FrameDetections
from evad.evaluation.tubes.geometry import box_iou
from evad.evaluation.tubes.groundtruth import TubeGroundTruth
from evad.evaluation.tubes.ranking import average_precision

FRAME_IOU = 0.5


def _match_frames(
    det_keys: np.ndarray, det_boxes: np.ndarray, gt_keys: np.ndarray, gt_boxes: np.ndarray, threshold: float
) -> np.ndarray:
    """True positives among ranked detections; each removes the best remaining box of its frame on a hit."""
    lo = np.searchsorted(gt_keys, det_keys, side="left")
    count = np.searchsorted(gt_keys, det_keys, side="right") - lo
    is_tp = np.zeros(len(det_keys), dtype=bool)
    # A frame with one box: the first detection (in rank order) that reaches the threshold takes it.
    single = np.flatnonzero(count == 1)
    hits = single[box_iou(gt_boxes[lo[single]], det_boxes[single]) >= threshold]
    _, first = np.unique(det_keys[hits], return_index=True)
    is_tp[hits[first]] = True
    # Frames with several boxes: the greedy matching, frame by frame.
    multi = np.flatnonzero(count > 1)
    multi = multi[np.argsort(det_keys[multi], kind="stable")]  # grouped by frame, rank order kept
    for group in np.split(multi, np.flatnonzero(np.diff(det_keys[multi])) + 1) if multi.size else ():
        boxes = gt_boxes[lo[group[0]] : lo[group[0]] + count[group[0]]]
        ious = box_iou(boxes[None], det_boxes[group, None])  # (n, m)
        free = np.ones(len(boxes), dtype=bool)
        for i, row in zip(group, ious, strict=True):
            j = int(np.argmax(np.where(free, row, -np.inf)))
            if free[j] and row[j] >= threshold:
                is_tp[i], free[j] = True, False
    return is_tp


def frame_average_precision(
    groundtruth: TubeGroundTruth,
    detections: FrameDetections,
    scores: np.ndarray,
    threshold: float = FRAME_IOU,
    frames: np.ndarray | None = None,
) -> np.ndarray:
    """Frame-AP of every class over every frame of every test video.

    Args:
        groundtruth: the test split.
        detections: the detections.
        scores: ``(N,)`` their scores after ``decay_nms``.
        threshold: IoU for a hit.
        frames: ``(F, 2)`` (video index, frame) pairs that were scored, e.g. every n-th frame;
            ground truth on other frames is left out. None scores every frame (the protocol).

    Returns:
        ``(C,)`` AP per class; 0 for a class without ground truth.
    """
    stride = int(groundtruth.nframes.max(initial=0)) + 1
    keys, labels, boxes = [], [], []
    for v, video_tubes in enumerate(groundtruth.tubes):
        for label, tubes in video_tubes.items():
            for tube in tubes:
                tube_frames = tube[:, 0].astype(np.int64)
                # Frames outside the video can never be hit.
                inside = (tube_frames >= 1) & (tube_frames <= groundtruth.nframes[v])
                keys.append(np.where(inside, v * stride + tube_frames, -1))
                labels.append(np.full(len(tube), label))
                boxes.append(tube[:, 1:5].astype(np.float64))
    gt_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    gt_labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    gt_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    if frames is not None:
        scored = np.isin(gt_keys, frames[:, 0].astype(np.int64) * stride + frames[:, 1].astype(np.int64))
        gt_keys, gt_labels, gt_boxes = gt_keys[scored], gt_labels[scored], gt_boxes[scored]
    gt_order = np.lexsort((gt_keys, gt_labels))  # by class, then frame; tube order kept within a frame
    gt_keys, gt_labels, gt_boxes = gt_keys[gt_order], gt_labels[gt_order], gt_boxes[gt_order]

    det_keys = detections.video * stride + detections.frame
    base = np.lexsort((detections.frame, detections.video))  # the reference's order: video, frame, file
    aps = np.zeros(len(groundtruth.labels))
    for c in range(len(aps)):
        rows = base[detections.label[base] == c]
        rows = rows[np.argsort(-scores[rows])]
        lo, hi = np.searchsorted(gt_labels, [c, c + 1])
        is_tp = _match_frames(
            det_keys[rows], detections.boxes[rows], gt_keys[lo:hi], gt_boxes[lo:hi], threshold
        )
        aps[c] = average_precision(is_tp, int(hi - lo))
    return aps
