"""Video-AP: detections linked into tubes per video and class, ranked after a tube NMS.

Tubes are linked from the top 10 decayed boxes of each frame, ended at their first frame without a
match, and kept at mean score >= 0.005 and length >= 15. Video-AP ranks them after a tube NMS at
spatio-temporal IoU 0.3 (SPEC section 11). Tube scores are float32 means, as the reference's are.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from evad.evaluation.tubes.detections import FrameDetections
from evad.evaluation.tubes.geometry import box_iou, spatiotemporal_iou
from evad.evaluation.tubes.groundtruth import TubeGroundTruth
from evad.evaluation.tubes.ranking import average_precision, group_starts, reference_order

BOXES_PER_FRAME = 10
LINK_IOU = 0.5
MIN_TUBE_SCORE = 0.005
MIN_TUBE_LENGTH = 15
TUBE_NMS_IOU = 0.3


def _mean_score(scores: np.ndarray) -> np.float32:
    # np.mean of float32 scores (same sum; float32 division equals rounding the float64 one).
    return np.add.reduce(scores) / np.float32(len(scores))


def _by_mean_score(live: list[list], scores: np.ndarray, score_bound: float) -> list[list]:
    """Live tubes ``[first frame, rows, sum of scores]`` in the reference's descending mean order.

    The reference sorts float32 means. Float64 means give the same order when no two are closer
    than the float32 error bound (any summation order: (n + 1) * 2**-24 * max |score| per mean);
    otherwise the float32 means are computed and sorted as the reference does, which also orders
    equal means as it does.
    """
    if len(live) < 2:
        return live
    lengths = [len(tube[1]) for tube in live]
    means = [tube[2] / n for tube, n in zip(live, lengths, strict=True)]
    order = sorted(range(len(live)), key=means.__getitem__, reverse=True)
    ranked = [means[i] for i in order]
    tolerance = 2.4e-7 * (max(lengths) + 2) * score_bound
    if any(x - y <= tolerance for x, y in itertools.pairwise(ranked)):
        exact = np.array([_mean_score(scores[rows]) for _, rows, _ in live], dtype=np.float32)
        order = np.argsort(-exact).tolist()
    return [live[i] for i in order]


def _successors(key: np.ndarray, boxes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[list[int]]:
    """Per row, the rows of the next frame (same track) with link IoU >= 0.5, in row order."""
    pairs = np.flatnonzero(key[starts[1:]] == key[starts[:-1]] + 1)  # frame groups g and g + 1
    sizes_a, sizes_b = (ends - starts)[pairs], (ends - starts)[pairs + 1]
    count = sizes_a * sizes_b
    owner = np.repeat(np.arange(len(pairs)), count)
    offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    i = starts[pairs][owner] + offset // sizes_b[owner]  # every box of frame g ...
    j = starts[pairs + 1][owner] + offset % sizes_b[owner]  # ... with every box of frame g + 1
    linked = box_iou(boxes[i], boxes[j]) >= LINK_IOU
    successors: list[list[int]] = [[] for _ in range(len(key))]
    for row, successor in zip(i[linked].tolist(), j[linked].tolist(), strict=True):
        successors[row].append(successor)
    return successors


def _link(
    track: np.ndarray, frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, nframes: np.ndarray
) -> list[list[tuple[np.ndarray, np.float32]]]:
    """``link_tubes`` for many tracks at once (a track is one video and class).

    Args:
        track: ``(N,)`` track of each detection, in ``0..T-1``.
        frame: ``(N,)`` frame of each detection, in ``1..nframes``.
        boxes: ``(N, 4)`` float32 boxes.
        scores: ``(N,)`` float32 decayed scores; rows of a frame in file order.
        nframes: ``(T,)`` number of frames of each track's video.

    Returns:
        Per track, the ``(tube, score)`` pairs in the reference's order.
    """
    stride = int(nframes.max(initial=0)) + 2
    key = track * stride + frame  # consecutive frames of a track have consecutive keys
    order = reference_order(key, scores)
    starts = group_starts(key[order])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    order = order[rank < BOXES_PER_FRAME]  # per frame, the best 10 in descending score
    key, boxes, scores = key[order], boxes[order], scores[order]
    starts = group_starts(key)
    ends = np.r_[starts[1:], len(key)][: len(starts)]  # no group, no end
    # Live tubes at a frame all end on the previous frame: their candidates are the successors.
    successors = _successors(key, boxes, starts, ends)
    score_sums = scores.astype(np.float64).tolist()
    score_bounds = np.zeros(len(nframes))
    np.maximum.at(score_bounds, key // stride, np.abs(scores))

    finished: list[list[list]] = [[] for _ in nframes]
    live: list[list] = []  # [first frame, rows, sum of scores]
    group_track, group_frame = (key[starts] // stride).tolist(), (key[starts] % stride).tolist()
    for g, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        t, f = group_track[g], group_frame[g]
        bound = float(score_bounds[t])
        if live and f != group_frame[g - 1] + 1:  # the frame before has no box: every tube ends there
            finished[t].extend(reversed(_by_mean_score(live, scores, bound)))
            live = []
        free = [True] * (b - a)
        if live:
            kept, ended = [], []
            for tube in _by_mean_score(live, scores, bound):
                # The first free successor has the best score: a frame's rows are best first.
                j = next((j for j in successors[tube[1][-1]] if free[j - a]), None)
                if j is None:
                    ended.append(tube)
                    continue
                tube[1].append(j)
                tube[2] += score_sums[j]
                free[j - a] = False
                kept.append(tube)
            finished[t].extend(reversed(ended))
            live = kept
        live.extend([f, [a + k], score_sums[a + k]] for k, unused in enumerate(free) if unused)
        if g + 1 == len(starts) or group_track[g + 1] != t:  # the track's last frame with a box
            if f < nframes[t]:  # tubes end on the next frame, as at a gap
                live = list(reversed(_by_mean_score(live, scores, bound)))
            finished[t].extend(live)
            live = []

    out: list[list[tuple[np.ndarray, np.float32]]] = [[] for _ in nframes]
    for t, tubes in enumerate(finished):
        for first, rows, _ in tubes:
            if len(rows) < MIN_TUBE_LENGTH:
                continue
            score = _mean_score(scores[rows])
            if score < np.float32(MIN_TUBE_SCORE):
                continue
            tube = np.empty((len(rows), 5), dtype=np.float32)
            tube[:, 0] = np.arange(first, first + len(rows))
            tube[:, 1:] = boxes[rows]
            out[t].append((tube, score))
    return out


def link_tubes(
    frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, nframes: int
) -> list[tuple[np.ndarray, np.float32]]:
    """Link one video's detections of one class into tubes.

    Per frame, the 10 best boxes (by decayed score) are taken. Frame by frame, live tubes in
    descending mean score each take the best remaining box whose IoU with the tube's last box is
    >= 0.5; a tube without one ends (no gap is bridged); boxes left over start new tubes. Tubes with
    mean score < 0.005 or fewer than 15 frames are dropped.

    Args:
        frame: ``(N,)`` frame of each detection, in ``1..nframes``.
        boxes: ``(N, 4)`` float32 boxes.
        scores: ``(N,)`` float32 scores after ``decay_nms``; rows of a frame in file order.
        nframes: number of frames of the video.

    Returns:
        ``(tube, score)`` pairs in the reference's order: tubes ``(L, 5)`` float32 of rows
        ``frame, x1, y1, x2, y2`` and the mean score as float32.
    """
    track = np.zeros(len(frame), dtype=np.int64)
    return _link(track, np.asarray(frame, dtype=np.int64), boxes, scores, np.array([nframes]))[0]


def build_tubes(
    groundtruth: TubeGroundTruth, detections: FrameDetections, scores: np.ndarray
) -> list[list[list[tuple[np.ndarray, np.float32]]]]:
    """Link tubes for every test video and class.

    Args:
        groundtruth: the test split (for the videos' lengths).
        detections: the detections.
        scores: ``(N,)`` their scores after ``decay_nms``.

    Returns:
        ``tubes[label][video]``: the ``link_tubes`` output.
    """
    num_labels = len(groundtruth.labels)
    track = detections.label * len(groundtruth.videos) + detections.video
    nframes = np.tile(groundtruth.nframes, num_labels)
    tubes = _link(track, detections.frame, detections.boxes, scores, nframes)
    return [tubes[c * len(groundtruth.videos) : (c + 1) * len(groundtruth.videos)] for c in range(num_labels)]


def tube_nms(tubes: Sequence[tuple[np.ndarray, np.float32]], threshold: float = TUBE_NMS_IOU) -> list[int]:
    """Hard NMS of scored tubes by spatio-temporal IoU.

    Args:
        tubes: ``(tube, score)`` pairs.
        threshold: a tube whose IoU with a kept one exceeds it is removed.

    Returns:
        Indices of the kept tubes, best first.
    """
    order = np.argsort(np.array([score for _, score in tubes], dtype=np.float32))
    keep = []
    while order.size:
        best, order = order[-1], order[:-1]
        keep.append(int(best))
        ious = np.array([spatiotemporal_iou(tubes[i][0], tubes[best][0]) for i in order])
        order = order[ious <= threshold] if order.size else order
    return keep


def video_average_precision(
    groundtruth: TubeGroundTruth,
    tubes: list[list[list[tuple[np.ndarray, np.float32]]]],
    thresholds: Sequence[float],
) -> np.ndarray:
    """Video-AP of every class at each spatio-temporal IoU threshold.

    Args:
        groundtruth: the test split.
        tubes: ``build_tubes`` output.
        thresholds: spatio-temporal IoUs for a hit.

    Returns:
        ``(T, C)`` AP per threshold and class; 0 for a class without ground truth.
    """
    aps = np.zeros((len(thresholds), len(groundtruth.labels)))
    for c in range(len(groundtruth.labels)):
        found = []  # (video, tube, score) after the tube NMS, in the reference's order
        for v, video_tubes in enumerate(tubes[c]):
            found.extend((v, *video_tubes[i]) for i in tube_nms(video_tubes))
        ranked = np.argsort(-np.array([score for _, _, score in found], dtype=np.float32))
        gt = [video_tubes.get(c, []) for video_tubes in groundtruth.tubes]
        # The IoUs are kept as computed: the reference compares each in its own dtype.
        ious = [[spatiotemporal_iou(g, found[i][1]) for g in gt[found[i][0]]] for i in ranked]
        for t, threshold in enumerate(thresholds):
            free = [np.ones(len(g), dtype=bool) for g in gt]
            is_tp = np.zeros(len(ranked), dtype=bool)
            for r, i in enumerate(ranked):
                remaining = free[found[i][0]]
                if remaining.any():
                    j = int(np.argmax(np.where(remaining, np.array(ious[r], dtype=np.float64), -np.inf)))
                    if ious[r][j] >= threshold:
                        is_tp[r], remaining[j] = True, False
            aps[t, c] = average_precision(is_tp, sum(len(g) for g in gt))
    return aps
