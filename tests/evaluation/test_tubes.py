"""UCF101-24 / JHMDB frame- and video-mAP (SPEC section 11) on hand-computed toy cases.

Boxes follow the +1 pixel rule: ``(0, 0, 99, 99)`` covers 100 x 100 pixels, and a copy shifted
right by d pixels overlaps it with IoU (100 - d) / (100 + d).
"""

import json
import os
import pickle
import re
import struct
import warnings

import numpy as np
import pytest
import torch

from evad.errors import UserError
from evad.evaluation.tubes import (
    FrameDetections,
    TubeGroundTruth,
    box_iou,
    decay_nms,
    evaluate_tubes,
    link_tubes,
    load_groundtruth,
    parse_iou_thresholds,
    read_detections,
    spatiotemporal_iou,
    tube_nms,
)

BOX = (0.0, 0.0, 99.0, 99.0)


def shifted(box, dx=0.0, dy=0.0):
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def tube(first, last, box):
    """Ground-truth tube on frames first..last with a constant box."""
    frames = np.arange(first, last + 1, dtype=np.float64)[:, None]
    return np.hstack([frames, np.tile(np.asarray(box, dtype=np.float64), (len(frames), 1))])


def groundtruth(tubes, nframes, labels=("a", "b")):
    """In-memory ground truth: ``tubes`` is {video: {label: [tube, ...]}}."""
    videos = tuple(nframes)
    counts = np.array([nframes[v] for v in videos])
    return TubeGroundTruth(tuple(labels), videos, counts, tuple(tubes.get(v, {}) for v in videos))


def detections(rows):
    """Rows of (video index, frame, box, label, score)."""
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return FrameDetections(empty, empty, empty, np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    video, frame, box, label, score = zip(*rows, strict=True)
    return FrameDetections(
        np.array(video),
        np.array(frame),
        np.array(label),
        np.array(box, np.float32),
        np.array(score, np.float32),
    )


def track(video, frames, box, label, score, step=0.0):
    """Detection rows following a box that moves ``step`` pixels right per frame."""
    return [(video, f, shifted(box, step * i), label, score) for i, f in enumerate(frames)]


# ------------------------------------------------------------------------------------- geometry


def test_box_iou_uses_the_plus_one_rule():
    assert box_iou(np.array([0.0, 0, 9, 9]), np.array([0.0, 0, 9, 4])) == 0.5  # 50 / 100; no +1: 36 / 81
    assert box_iou(np.array(BOX), np.array([0.0, 0, 99, 48])) == pytest.approx(0.49)
    assert box_iou(np.array(BOX), np.array(shifted(BOX, 100))) == 0.0  # touching edges do not overlap


def test_spatiotemporal_iou_with_partial_temporal_overlap():
    a = tube(1, 20, (0, 0, 9, 9))
    b = tube(11, 30, (0, 0, 9, 4))
    # Frames 11..20 are common: temporal IoU 10 / 30, per-frame IoU 0.5.
    assert spatiotemporal_iou(a, b) == pytest.approx(1 / 6)
    assert spatiotemporal_iou(b, a) == pytest.approx(1 / 6)
    assert spatiotemporal_iou(a, tube(21, 30, (0, 0, 9, 9))) == 0.0


# -------------------------------------------------------------------------------------- frame-AP


def test_perfect_detector_scores_one():
    gt = groundtruth(
        {"v0": {0: [tube(1, 20, BOX)]}, "v1": {1: [tube(3, 22, shifted(BOX, 30, 10))]}}, {"v0": 20, "v1": 25}
    )
    rows = track(0, range(1, 21), BOX, 0, 0.9) + track(1, range(3, 23), shifted(BOX, 30, 10), 1, 0.7)
    metrics = evaluate_tubes(gt, detections(rows))
    assert metrics.frame_map == pytest.approx(1.0, abs=1e-6)  # 0.99999994: float32 sums, as the reference
    assert metrics.video_map == {"0.2": 1.0, "0.5": 1.0, "0.75": 1.0, "0.5:0.95": 1.0}
    assert metrics.warnings == ()


def test_duplicate_is_a_false_positive_after_the_score_decay():
    gt = groundtruth({"v0": {0: [np.array([[1, *BOX], [2, *shifted(BOX, 200)]])]}}, {"v0": 20})
    rows = [
        (0, 1, BOX, 0, 0.9),
        (0, 1, shifted(BOX, 24), 0, 0.85),  # IoU 76 / 124 > 0.6 with the first: score 0.85 * 48 / 124
        (0, 2, shifted(BOX, 200), 0, 0.2),
    ]
    # Ranked: TP (0.9), FP (0.329, its frame's box is taken), TP (0.2). Trapezoids from (0, 1):
    # 0.5 * (1 + 1) / 2 + 0 + 0.5 * (1/2 + 2/3) / 2 = 19/24 (an envelope would give 5/6).
    assert evaluate_tubes(gt, detections(rows)).frame_ap[0] == pytest.approx(19 / 24, abs=1e-6)


def test_each_detection_takes_the_best_remaining_box_of_its_frame():
    gt = groundtruth({"v0": {0: [tube(1, 1, BOX), tube(1, 1, shifted(BOX, 200))]}}, {"v0": 20})
    rows = [
        (0, 1, BOX, 0, 0.9),
        (0, 1, shifted(BOX, 30), 0, 0.8),  # overlaps only the box already taken: a false positive
        (0, 1, shifted(BOX, 200), 0, 0.7),
    ]
    assert evaluate_tubes(gt, detections(rows)).frame_ap[0] == pytest.approx(19 / 24, abs=1e-6)


@pytest.mark.parametrize(("y2", "expected"), [(49.0, 1.0), (48.0, 0.0)])
def test_frame_iou_threshold_is_inclusive_with_the_plus_one_rule(y2, expected):
    # (0, 0, 99, 49) covers 100 x 50 pixels: IoU exactly 0.5, a hit (without the +1 it would be 0.495).
    gt = groundtruth({"v0": {0: [tube(1, 1, BOX)]}}, {"v0": 20})
    metrics = evaluate_tubes(gt, detections([(0, 1, (0.0, 0.0, 99.0, y2), 0, 0.9)]))
    assert metrics.frame_ap[0] == expected


def test_detections_on_frames_without_ground_truth_are_false_positives():
    gt = groundtruth({"v0": {0: [tube(1, 1, BOX)]}, "v1": {}}, {"v0": 20, "v1": 20})
    rows = [(0, 2, BOX, 0, 0.9), (0, 1, BOX, 0, 0.5), (1, 1, BOX, 0, 0.4)]
    # FP, TP, FP: 0 + 1 * (0 + 1/2) / 2 + 0 = 0.25.
    assert evaluate_tubes(gt, detections(rows)).frame_ap[0] == pytest.approx(0.25)


def test_frame_ap_on_a_subset_of_frames_ignores_the_other_frames():
    gt = groundtruth({"v0": {0: [tube(1, 20, BOX)]}}, {"v0": 20})
    rows = track(0, range(1, 21, 5), BOX, 0, 0.9)  # frames 1, 6, 11, 16 only
    assert evaluate_tubes(gt, detections(rows)).frame_ap[0] == pytest.approx(4 / 20, abs=1e-6)
    scored = np.array([(0, f) for f in range(1, 21, 5)])
    metrics = evaluate_tubes(gt, detections(rows), frames=scored)
    assert metrics.frame_ap[0] == pytest.approx(1.0, abs=1e-6)
    assert metrics.video_ap == {}  # video-AP links every frame; not computed on a subset


def test_decay_nms_numbers():
    boxes = np.array(
        [BOX, shifted(BOX, 24), shifted(BOX, 40), shifted(BOX, 50), BOX, shifted(BOX, 25)], np.float32
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.9, 0.5], np.float32)
    groups = np.array([0, 0, 0, 0, 1, 1])
    decayed = decay_nms(boxes, scores, groups)
    expected = [
        0.9,
        0.8 * (1 - 76 / 124),  # decayed by the first box and never visited
        0.7,  # IoU 60/140 with the first; its IoU 84/116 with the decayed second box does not count
        0.6 * (1 - 90 / 110),  # IoU 50/150 with the first, 90/110 with the third (visited)
        0.9,
        0.5,  # IoU exactly 0.6 is not above the threshold
    ]
    np.testing.assert_allclose(decayed, expected, rtol=1e-6)
    assert decayed.dtype == np.float32


def test_decay_nms_rounds_like_the_reference_nms():
    """The reference computes the overlap width as ``min(x2, x2') - max(x1, x1') + 1`` in float32;
    ``min(x2 + 1, x2' + 1) - max(x1, x1')`` rounds differently here, which gave a decayed score one
    float32 step lower and could break or make a tie with another detection's score."""
    boxes = np.array(
        [[75.74650573730469, 18.102920532226562, 128.7556915283203, 71.87185668945312],
         [84.60795593261719, 12.990056991577148, 127.09362030029297, 66.40254211425781]],
        np.float32,
    )  # fmt: skip
    scores = np.array([0.8894878625869751, 0.721488356590271], np.float32)
    one = np.float32(1)
    a, b = boxes
    width = max(np.float32(0), min(a[2], b[2]) - max(a[0], b[0]) + one)
    height = max(np.float32(0), min(a[3], b[3]) - max(a[1], b[1]) + one)
    area_a = (a[2] - a[0] + one) * (a[3] - a[1] + one)
    area_b = (b[2] - b[0] + one) * (b[3] - b[1] + one)
    iou = width * height / (area_a + area_b - width * height)
    expected = scores[1] * (one - iou)
    assert expected == np.float32(0.23514549)  # the reference's value for this pair
    assert decay_nms(boxes, scores, np.zeros(2, np.int64))[1] == expected


# ------------------------------------------------------------------------------------ tube linking


def link(rows, nframes=60):
    """Tubes of one video and class, after the per-frame decay NMS as in the full evaluation."""
    frame, box, score = zip(*((f, b, s) for _, f, b, _, s in rows), strict=True)
    frame, box = np.array(frame), np.array(box, np.float32)
    return link_tubes(frame, box, decay_nms(box, np.array(score, np.float32), frame), nframes)


def test_link_a_clean_track():
    (linked, score), *others = link(track(0, range(1, 21), BOX, 0, 0.8, step=2.0))
    assert others == []
    np.testing.assert_array_equal(linked[:, 0], np.arange(1, 21))
    np.testing.assert_array_equal(linked[:, 1], 2.0 * np.arange(20))
    assert score == np.float32(0.8)


def test_a_one_frame_gap_ends_a_tube_and_starts_another():
    rows = track(0, range(1, 21), BOX, 0, 0.8) + track(0, range(22, 42), BOX, 0, 0.8)
    assert [(t[0, 0], t[-1, 0]) for t, _ in link(rows)] == [(1, 20), (22, 41)]
    # A piece shorter than 15 frames is dropped.
    rows = track(0, range(1, 11), BOX, 0, 0.8) + track(0, range(12, 31), BOX, 0, 0.8)
    assert [(t[0, 0], t[-1, 0]) for t, _ in link(rows)] == [(12, 30)]


def test_only_the_10_best_boxes_of_a_frame_are_linked():
    scores = 0.9 - 0.05 * np.arange(12)
    rows = [
        row
        for k, score in enumerate(scores)
        for row in track(0, range(1, 21), shifted(BOX, 200 * k), 0, score)
    ]
    linked = link(rows, nframes=20)
    np.testing.assert_allclose([score for _, score in linked], scores[:10], rtol=1e-6)  # best mean first


def crossing(score_a, score_b):
    """Two 40 x 40 boxes crossing: A moves right from x = 0, B left from x = 76, 4 pixels a frame."""
    a = [(0, f, (4.0 * (f - 1), 0.0, 4.0 * (f - 1) + 39, 39.0), 0, score_a(f)) for f in range(1, 21)]
    b = [(0, f, (76.0 - 4 * (f - 1), 0.0, 115.0 - 4 * (f - 1), 39.0), 0, score_b(f)) for f in range(1, 21)]
    return link(a + b, nframes=20)


def test_crossing_tracks_keep_their_boxes():
    (first, score_first), (second, score_second) = crossing(lambda f: 0.9, lambda f: 0.5)
    np.testing.assert_array_equal(first[:, 1], 4.0 * np.arange(20))
    np.testing.assert_array_equal(second[:, 1], 76.0 - 4.0 * np.arange(20))
    # On frames 10 and 11 the boxes overlap with IoU 1440/1760 > 0.6: B's score decays there.
    assert score_first == pytest.approx(0.9)
    assert score_second == pytest.approx((18 * 0.5 + 2 * 0.5 * 320 / 1760) / 20, rel=1e-6)


def test_crossing_tracks_swap_when_the_other_box_scores_higher():
    # From frame 11, A's boxes score 0.3 < 0.5: the better tube takes B's box (IoU 1 with its last).
    (first, score_first), (second, score_second) = crossing(lambda f: 0.9 if f <= 10 else 0.3, lambda f: 0.5)
    x_a, x_b = 4.0 * np.arange(20), 76.0 - 4.0 * np.arange(20)
    np.testing.assert_array_equal(first[:, 1], np.r_[x_a[:10], x_b[10:]])
    np.testing.assert_array_equal(second[:, 1], np.r_[x_b[:10], x_a[10:]])
    assert score_first == pytest.approx((10 * 0.9 + 10 * 0.5) / 20)
    decay = 320 / 1760  # 1 - IoU on frames 10 and 11
    assert score_second == pytest.approx((9 * 0.5 + 0.5 * decay + 0.3 * decay + 9 * 0.3) / 20, rel=1e-6)


@pytest.mark.parametrize(
    ("length", "score", "kept"), [(14, 0.8, False), (15, 0.8, True), (20, 0.004, False), (20, 0.006, True)]
)
def test_tubes_need_15_frames_and_mean_score_0_005(length, score, kept):
    assert len(link(track(0, range(1, length + 1), BOX, 0, score))) == int(kept)


def test_tube_nms_at_0_3():
    tubes = [
        (tube(1, 20, BOX).astype(np.float32), np.float32(0.9)),
        (tube(9, 20, BOX).astype(np.float32), np.float32(0.8)),  # IoU 12/20 with the first: removed
        (tube(16, 20, BOX).astype(np.float32), np.float32(0.7)),  # IoU 5/20: kept
        (tube(30, 44, BOX).astype(np.float32), np.float32(0.6)),  # no common frame
    ]
    assert tube_nms(tubes) == [0, 2, 3]


# --------------------------------------------------------------------------------------- video-AP


def test_video_ap_at_each_threshold():
    gt = groundtruth({"v0": {0: [tube(1, 20, BOX)]}}, {"v0": 30}, labels=("a",))
    rows = track(0, range(1, 21), (0.0, 0.0, 99.0, 61.0), 0, 0.9)  # IoU 0.62 on every frame
    metrics = evaluate_tubes(gt, detections(rows))
    assert metrics.frame_map == pytest.approx(1.0, abs=1e-6)
    assert metrics.video_map == pytest.approx({"0.2": 1.0, "0.5": 1.0, "0.75": 0.0, "0.5:0.95": 0.3})


def test_video_ap_uses_the_spatiotemporal_iou():
    gt = groundtruth({"v0": {0: [tube(1, 40, BOX)]}}, {"v0": 40}, labels=("a",))
    metrics = evaluate_tubes(gt, detections(track(0, range(1, 21), BOX, 0, 0.9)), ["0.5", "0.55"])
    assert metrics.video_map == {"0.5": 1.0, "0.55": 0.0}  # temporal IoU 20/40


def test_class_with_detections_but_no_ground_truth_scores_zero_and_warns():
    gt = groundtruth({"v0": {0: [tube(1, 20, BOX)]}}, {"v0": 20})
    rows = track(0, range(1, 21), BOX, 0, 0.9) + track(0, range(1, 21), shifted(BOX, 300), 1, 0.8)
    metrics = evaluate_tubes(gt, detections(rows))
    assert metrics.frame_ap.tolist() == [pytest.approx(1.0, abs=1e-6), 0.0]
    assert metrics.video_ap["0.5"].tolist() == [1.0, 0.0]
    assert metrics.frame_map == pytest.approx(0.5, abs=1e-6)  # the class counts in the mean
    assert (
        len(metrics.warnings) == 1
        and "'b' has detections but no ground truth in test split 1" in metrics.warnings[0]
    )


def test_no_detections_score_zero_and_warn():
    gt = groundtruth({"v0": {0: [tube(1, 20, BOX)]}}, {"v0": 20})
    metrics = evaluate_tubes(gt, detections([]))
    assert metrics.frame_ap.tolist() == [0.0, 0.0] and metrics.video_map["0.5"] == 0.0
    assert metrics.warnings == ("in-memory detections: no detections; every class scores AP 0",)
    assert link_tubes(np.zeros(0), np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 20) == []


def test_boxes_that_look_normalised_warn():
    gt = groundtruth({"v0": {0: [tube(1, 20, BOX)]}}, {"v0": 20})
    normalised = track(0, range(1, 21), (0.0, 0.0, 0.3, 0.4), 0, 0.9)
    metrics = evaluate_tubes(gt, detections(normalised))
    assert metrics.frame_map == 0.0
    assert len(metrics.warnings) == 1 and "every box lies inside [0, 1] x [0, 1]" in metrics.warnings[0]
    assert evaluate_tubes(gt, detections([*normalised, (0, 1, BOX, 0, 0.5)])).warnings == ()
    tiny = groundtruth({"v0": {0: [tube(1, 20, (0.0, 0.0, 0.5, 0.5))]}}, {"v0": 20})  # truth this small
    assert evaluate_tubes(tiny, detections(normalised)).warnings == ()


def _three_rows(**changes):
    rows = {
        "video": np.zeros(3, np.int64),
        "frame": np.arange(1, 4),
        "label": np.zeros(3, np.int64),
        "boxes": np.tile(np.array(BOX, np.float32), (3, 1)),
        "scores": np.full(3, 0.5, np.float32),
    }
    return FrameDetections(**{**rows, **changes})


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"video": [0, 0, 0]}, TypeError, "FrameDetections.video must be an integer numpy array, got list"),
        (
            {"label": np.zeros(3)},
            TypeError,
            "FrameDetections.label must be an integer numpy array, got float64",
        ),
        (
            {"boxes": np.ones((3, 5), np.float32)},
            ValueError,
            r"boxes must be \(N, 4\) = \(3, 4\), got \(3, 5\)",
        ),
        ({"scores": np.array([0.5, np.nan, 0.5], np.float32)}, ValueError, "must be finite"),
        ({"boxes": np.full((3, 4), np.inf, np.float32)}, ValueError, "must be finite"),
    ],
)
def test_in_memory_detections_of_the_wrong_kind_are_named(changes, error, message):
    """Lists and float indices ended in AttributeError or IndexError; NaN was scored."""
    gt = groundtruth({"v0": {0: [tube(1, 20, BOX)]}}, {"v0": 20})
    with pytest.raises(error, match=message):
        evaluate_tubes(gt, _three_rows(**changes))


@pytest.mark.parametrize(
    "frames",
    [
        np.ones((3, 3), np.int64),
        [[0.5, 1.0]],
        np.array([[1, 1]]),
        np.array([[-1, 1]]),
        np.array([[0, 2], [0, 21]]),
        np.array([[0, 0]]),
    ],
)
def test_scored_frames_of_the_wrong_shape_video_or_frame_are_named(frames):
    """(F, 3), video index 1 of a one-video ground truth and frame 21 of a 20-frame video (read as a
    frame of the next video) were silently accepted; a list crashed."""
    gt = groundtruth({"v0": {0: [tube(1, 20, BOX)]}}, {"v0": 20})
    with pytest.raises(ValueError, match="frames"):
        evaluate_tubes(gt, _three_rows(), frames=frames)
    assert evaluate_tubes(gt, _three_rows(), frames=[[0, 1], [0, 2]]).video_ap == {}  # a list is fine


def test_ground_truth_that_is_a_path_or_a_split_that_is_text_is_named(tmp_path):
    with pytest.raises(TypeError, match="groundtruth must be load_groundtruth's output, got str"):
        evaluate_tubes("gt.pkl", _three_rows())
    with pytest.raises(ValueError, match="split must be a whole number from 1, got '1'"):
        load_groundtruth(tmp_path / "gt.pkl", split="1")  # was blamed on the file: "malformed ground truth"


def test_iou_threshold_parsing():
    assert parse_iou_thresholds(["0.50", "0.5:0.95"]) == [
        ("0.5", [0.5]),
        ("0.5:0.95", [0.5 + 0.05 * i for i in range(10)]),
    ]
    for bad in ["x", "0", "1.5", "0.5:0.97", "0.9:0.5", "0.1:0.2:0.3", "nan", "0.5:nan", "inf"]:
        with pytest.raises(UserError, match="IoU threshold"):
            parse_iou_thresholds([bad])
    assert parse_iou_thresholds([0.2, 0.5]) == [("0.2", [0.2]), ("0.5", [0.5])]  # numbers from Python
    for lone in ["0.5", 0.5]:  # "0.5" was read as "0", ".", "5"
        with pytest.raises(UserError, match="IoU thresholds must be a list"):
            parse_iou_thresholds(lone)


# ------------------------------------------------------------------------------------------ files


def write_groundtruth(path, drop=(), **overrides):
    data = {
        "labels": ["a", "b"],
        "gttubes": {"v0": {0: [tube(1, 20, BOX)]}, "v1": {1: [tube(1, 20, shifted(BOX, 50))]}, "t0": {}},
        "nframes": {"v0": 20, "v1": 25, "t0": 30},
        "train_videos": [["t0"]],
        "test_videos": [["v0", "v1"]],
        "resolution": {"v0": (240, 320), "v1": (240, 320), "t0": (240, 320)},
    }
    data.update(overrides)
    for key in drop:
        del data[key]
    path.write_bytes(pickle.dumps(data, protocol=2))
    return path


def perfect_rows():
    return [f"v0,{f},0,0,99,99,0,0.9" for f in range(1, 21)] + [
        f"v1,{f},50,0,149,99,1,0.8" for f in range(1, 21)
    ]


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("v0,2,0,0,99,99,0", "line 2: expected 8 fields"),
        ("v0,2,0,0,99,99,0,high", "line 2: score 'high' is not a number"),
        ("v0,2,0,0,99,99,0,nan", "line 2: score 'nan' is not finite"),
        ("v0,2,0,0,99,99,2,0.5", "line 2: label '2' is not an index"),
        ("v0,2,0,0,99,99,0.5,0.5", "line 2: label '0.5' is not an integer"),
        ("t0,2,0,0,99,99,0,0.5", "line 2: video 't0' is not a test video"),
        ("v9,2,0,0,99,99,0,0.5", "line 2: video 'v9' is not a test video"),
        ("v0,0,0,0,99,99,0,0.5", "line 2: frame '0' is outside 1..20"),
        ("v0,21,0,0,99,99,0,0.5", "line 2: frame '21' is outside 1..20"),
        ("v0,2.5,0,0,99,99,0,0.5", "line 2: frame '2.5' is not an integer"),
        ("v0,2,50,0,49,99,0,0.5", "line 2: box has x2 < x1"),
        # finite in float64, infinite in the float32 the boxes and scores are kept in: a ValueError
        ("v0,2,-1e300,0,99,99,0,0.5", "line 2: a box coordinate or the score is too large for float32"),
        ("v0,2,0,0,99,99,0,1e39", "line 2: a box coordinate or the score is too large for float32"),
    ],
)
def test_bad_detection_rows_name_file_and_line(tmp_path, line, message):
    gt = load_groundtruth(write_groundtruth(tmp_path / "gt.pkl"))
    path = write_csv(tmp_path / "det.csv", ["v0,1,0,0,99,99,0,0.9", line, "v0,3,0,0,99,99,0,0.9"])
    with pytest.raises(UserError, match=message) as err:
        read_detections(path, gt)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("quote", ["", '"'])  # quoted fields take the csv module's path
def test_detections_csv_round_trip(tmp_path, quote):
    gt = load_groundtruth(write_groundtruth(tmp_path / "gt.pkl"))
    path = tmp_path / "det.csv"
    path.write_bytes(f"\r\nv1,{quote}3{quote},50,0,149.5,99,1,0.25\r\n  \r\nv0,1,0,0,99,99,0,1".encode())
    dets = read_detections(path, gt)
    assert dets.video.tolist() == [1, 0] and dets.frame.tolist() == [3, 1] and dets.label.tolist() == [1, 0]
    assert dets.boxes.dtype == np.float32 and dets.boxes[0].tolist() == [50, 0, 149.5, 99]
    assert dets.scores.tolist() == [0.25, 1.0]
    path.write_bytes(f"v0,1,0,0,99,99,0,1\n\nv0,{quote}2{quote},0,0,99,99,0\n".encode())
    with pytest.raises(UserError, match="line 3: expected 8 fields"):
        read_detections(path, gt)
    path.write_bytes(b"v0,1,0,0,99,99,0,1\n\xff\n")
    with pytest.raises(UserError, match="line 2: not UTF-8"):
        read_detections(path, gt)
    path.write_bytes(b"\xef\xbb\xbfv1,3,50,0,149.5,99,1,0.25\n")  # a BOM, as spreadsheets save
    assert read_detections(path, gt).video.tolist() == [1]


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_restricted_unpickler_refuses_other_classes(tmp_path):
    target = tmp_path / "pwned"
    for payload in (Payload(str(target)), {"labels": [Payload]}):
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps(payload))
        with pytest.raises(UserError, match="refusing to load"):
            load_groundtruth(path)
    assert not target.exists()


def test_ground_truth_errors(tmp_path):
    with pytest.raises(UserError, match="lacks nframes"):
        load_groundtruth(write_groundtruth(tmp_path / "a.pkl", drop=["nframes"]))
    with pytest.raises(UserError, match=r"split 2 does not exist \(the pickle has 1 test splits\)"):
        load_groundtruth(write_groundtruth(tmp_path / "b.pkl"), split=2)  # numbered from 1
    with pytest.raises(UserError, match=r"split 0 does not exist"):
        load_groundtruth(write_groundtruth(tmp_path / "b.pkl"), split=0)
    with pytest.raises(UserError, match=r"c.pkl: test video 'v1' has nframes -1; it must be a whole number"):
        load_groundtruth(write_groundtruth(tmp_path / "c.pkl", nframes={"v0": 20, "v1": -1, "t0": 30}))
    with pytest.raises(UserError, match=r"c.pkl: test video 'v1' has nframes 10{30}; it must be a whole"):
        load_groundtruth(write_groundtruth(tmp_path / "c.pkl", nframes={"v0": 20, "v1": 10**30, "t0": 30}))
    gaps = {"v0": {0: [np.array([[1, *BOX], [3, *BOX]])]}, "v1": {}, "t0": {}}
    with pytest.raises(UserError, match="consecutive"):
        load_groundtruth(write_groundtruth(tmp_path / "c.pkl", gttubes=gaps))
    with pytest.raises(UserError, match="malformed ground truth"):
        load_groundtruth(write_groundtruth(tmp_path / "e.pkl", gttubes={"v0": [], "v1": {}}))
    (tmp_path / "d.pkl").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="not a usable ground-truth pickle"):
        load_groundtruth(tmp_path / "d.pkl")
    torch.save({"labels": ["a"]}, tmp_path / "t.pkl")
    with pytest.raises(UserError, match=r"t.pkl: a torch.save \(zip\) file, not a ground-truth pickle$"):
        load_groundtruth(tmp_path / "t.pkl")

    class External(pickle.Pickler):  # as torch's tensors are stored: by persistent id
        def persistent_id(self, obj):
            return "storage" if isinstance(obj, bytes) else None

    with open(tmp_path / "pid.pkl", "wb") as file:
        External(file).dump({"labels": b"x"})
    with pytest.raises(UserError) as err:  # pickle's message is two lines
        load_groundtruth(tmp_path / "pid.pkl")
    assert "\n" not in str(err.value) and "not a usable ground-truth pickle" in str(err.value)


def py2_pickle(obj) -> bytes:
    """A protocol-2 pickle as Python 2 wrote it: byte strings for ``str``, ``numpy.core`` arrays."""

    def string(data: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING: a Python 2 str
        return (
            b"U" + bytes([len(data)]) + data
            if len(data) < 256
            else b"T" + struct.pack("<i", len(data)) + data
        )

    def encode(x) -> bytes:
        if x is None:
            return b"N"
        if isinstance(x, str):
            return string(x.encode("latin-1"))
        if isinstance(x, int):
            return b"J" + struct.pack("<i", x)
        if isinstance(x, tuple):
            return b"(" + b"".join(map(encode, x)) + b"t"
        if isinstance(x, list):
            return b"](" + b"".join(map(encode, x)) + b"e"
        if isinstance(x, dict):
            return b"}(" + b"".join(encode(k) + encode(v) for k, v in x.items()) + b"u"
        # numpy.core.multiarray._reconstruct(ndarray, (0,), 'b'), then BUILD with the array's state
        dtype = b"cnumpy\ndtype\n" + encode((x.dtype.str[1:], 0, 1)) + b"R"
        dtype += encode((3, "<", None, None, None, -1, -1, 0)) + b"b"
        array = (
            b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n" + encode((0,)) + string(b"b") + b"tR"
        )
        state = b"(" + encode(1) + encode(x.shape) + dtype + b"\x89" + string(x.tobytes()) + b"t"
        return array + state + b"b"

    return b"\x80\x02" + encode(obj) + b"."


def test_python2_latin1_pickle_loads(tmp_path):
    first = tube(1, 20, BOX).astype("<f4")
    data = {
        "labels": ["caf\xe9", "b"],
        "gttubes": {"v0": {0: [first]}, "v1": {1: [tube(1, 20, shifted(BOX, 50))]}},
        "nframes": {"v0": 20, "v1": 25},
        "train_videos": [[]],
        "test_videos": [["v0", "v1"]],
        "resolution": {"v0": (240, 320), "v1": (240, 320)},
    }
    path = tmp_path / "py2.pkl"
    path.write_bytes(py2_pickle(data))
    gt = load_groundtruth(path)
    assert gt.labels == ("caf\xe9", "b") and gt.videos == ("v0", "v1")
    assert gt.nframes.tolist() == [20, 25]
    assert gt.tubes[0][0][0].dtype == np.float32
    np.testing.assert_array_equal(gt.tubes[0][0][0], first)
    np.testing.assert_array_equal(gt.tubes[1][1][0], tube(1, 20, shifted(BOX, 50)))


# -------------------------------------------------------------------------------------------- CLI


def test_cli_end_to_end_writes_json(tmp_path, capsys, monkeypatch):
    pytest.importorskip("evad.cli.evaluate_ava", reason="`evad evaluate` also needs the AVA sub-command")
    from evad import cli

    monkeypatch.setattr(cli, "_COMMAND_MODULES", ("evaluate",))  # whether or not `evad` lists it yet
    main = cli.main

    gt = write_groundtruth(tmp_path / "gt.pkl")
    rows = perfect_rows()
    rows[20:] = [row.replace(",0.8", ",0.3") for row in rows[20:25]]  # v1: 5 frames only, no tube
    det = write_csv(tmp_path / "det.csv", rows)
    out = tmp_path / "metrics.json"
    args = ["evaluate", "tubes", "--groundtruth", str(gt), "--detections", str(det), "--json", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "frame-mAP" in printed and "100.00" in printed
    result = json.loads(out.read_text())
    assert result["frame_mAP"] == pytest.approx((1 + 5 / 20) / 2, abs=1e-6)
    assert result["video_mAP"] == {"0.2": 0.5, "0.5": 0.5, "0.75": 0.5, "0.5:0.95": 0.5}
    assert result["per_class"]["a"] == {
        "frame_AP": pytest.approx(1.0, abs=1e-6),
        "video_AP": {"0.2": 1.0, "0.5": 1.0, "0.75": 1.0, "0.5:0.95": 1.0},
    }
    assert result["per_class"]["b"]["frame_AP"] == pytest.approx(0.25, abs=1e-6)

    assert main(args) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--iou", "0.5"]) == 0
    assert json.loads(out.read_text())["video_mAP"] == {"0.5": 0.5}
    # --classes 1: the means over class a alone, as evaluation of a model trained on it reports.
    assert main([*args, "--overwrite", "--classes", "1"]) == 0
    subset = json.loads(out.read_text())
    assert subset["frame_mAP"] == pytest.approx(1.0, abs=1e-6) and subset["video_mAP"]["0.5"] == 1.0
    assert subset["classes"] == ["a"] and list(subset["per_class"]) == ["a"]
    for bad, message in (("3", "--classes 3: .*gt.pkl has classes 1 to 2"), ("1 1", "names a class twice")):
        assert main([*args, "--overwrite", "--classes", *bad.split()]) == 2
        assert re.search(message, capsys.readouterr().err)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left

    assert main([*args, "--overwrite", "--detections", str(write_csv(tmp_path / "bad.csv", ["v0,1,2"]))]) == 2
    assert "bad.csv: line 1" in capsys.readouterr().err

    (tmp_path / "empty.csv").write_bytes(b"")
    assert main([*args, "--overwrite", "--detections", str(tmp_path / "empty.csv")]) == 0
    assert "empty.csv: no detections; every class scores AP 0" in capsys.readouterr().err
    assert json.loads(out.read_text())["frame_mAP"] == 0.0
    normalised = [f"v0,{f},0,0,0.3,0.4,0,0.9" for f in range(1, 21)]
    assert (
        main([*args, "--overwrite", "--detections", str(write_csv(tmp_path / "norm.csv", normalised))]) == 0
    )
    assert "norm.csv: every box lies inside [0, 1] x [0, 1]" in capsys.readouterr().err


def test_cli_frame_stride_scores_only_the_frames_detected(tmp_path, capsys, monkeypatch):
    pytest.importorskip("evad.cli.evaluate_ava", reason="`evad evaluate` also needs the AVA sub-command")
    from evad import cli

    monkeypatch.setattr(cli, "_COMMAND_MODULES", ("evaluate",))
    gt = write_groundtruth(tmp_path / "gt.pkl")
    odd = [row for row in perfect_rows() if int(row.split(",")[1]) % 2 == 1]  # frames 1, 3, ..., 19
    det = write_csv(tmp_path / "det.csv", odd)
    out = tmp_path / "metrics.json"
    args = ["evaluate", "tubes", "--groundtruth", str(gt), "--detections", str(det), "--json", str(out)]
    assert cli.main(args) == 0
    assert json.loads(out.read_text())["frame_mAP"] == pytest.approx(0.5, abs=1e-6)  # half the boxes missed
    assert "det.csv: every detection is on frames 1, 3, 5, ...;" in capsys.readouterr().err
    every = write_csv(tmp_path / "every.csv", perfect_rows())  # off-stride rows would be false positives
    assert cli.main([*args, "--overwrite", "--frame-stride", "2", "--detections", str(every)]) == 2
    assert (
        "every.csv: 20 detection rows are on frames that --frame-stride 2 does not score (first: frame 2 of"
        in (capsys.readouterr().err)
    )
    assert cli.main([*args, "--overwrite", "--frame-stride", "2"]) == 0
    assert "one frame in 2 scored" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["frame_mAP"] == pytest.approx(1.0, abs=1e-6) and result["video_mAP"] == {}
    assert cli.main([*args, "--overwrite", "--frame-stride", "0"]) == 2
    assert "--frame-stride must be at least 1" in capsys.readouterr().err
    # Splits are numbered from 1, as data.split and the JHMDB literature number them.
    assert cli.main([*args, "--overwrite", "--split", "1"]) == 0
    capsys.readouterr()
    assert cli.main([*args, "--overwrite", "--split", "2"]) == 2
    assert "split 2 does not exist" in capsys.readouterr().err
    assert cli.main([*args, "--overwrite", "--split", "0"]) == 2


def test_groundtruth_on_frames_the_video_lacks_warns_and_counts_as_missed(tmp_path):
    gttubes = {"v0": {0: [tube(1, 22, BOX)]}, "v1": {1: [tube(1, 20, shifted(BOX, 50))]}, "t0": {}}
    path = write_groundtruth(tmp_path / "gt.pkl", gttubes=gttubes)  # v0 has 20 frames
    with pytest.warns(UserWarning, match=r"gt.pkl: 2 ground-truth boxes .* outside their video's") as rec:
        gt = load_groundtruth(path)
    assert {w.filename for w in rec} == {__file__}
    metrics = evaluate_tubes(gt, read_detections(write_csv(tmp_path / "det.csv", perfect_rows()), gt))
    assert metrics.frame_ap[0] == pytest.approx(20 / 22)  # frames 21 and 22 can never be found
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_groundtruth(write_groundtruth(tmp_path / "clean.pkl"))


def test_link_iou_of_exactly_0_5_links():
    """SPEC section 11: a tube takes a box with IoU >= 0.5 to its last box. The track alternates
    between a 100 x 100 box and its upper half (IoU 5000 / 10000 = 0.5 with the +1 rule)."""
    half = (0.0, 0.0, 99.0, 49.0)
    rows = [(0, f, BOX if f % 2 else half, 0, 0.8) for f in range(1, 21)]
    assert [(t[0, 0], t[-1, 0]) for t, _ in link(rows)] == [(1, 20)]


def test_tube_of_mean_score_exactly_0_005_is_kept():
    """SPEC section 11: tubes with mean score >= 0.005 are kept. 16 frames: the float32 mean of 16
    equal scores is that score exactly."""
    assert len(link(track(0, range(1, 17), BOX, 0, 0.005))) == 1


def test_tube_nms_keeps_a_tube_of_iou_exactly_0_3():
    # Identical boxes on frames 15..20 of 1..20: temporal IoU 6 / 20 = 0.3, not above 0.3.
    tubes = [(tube(1, 20, BOX), np.float32(0.9)), (tube(15, 20, BOX), np.float32(0.8))]
    assert tube_nms(tubes) == [0, 1]
