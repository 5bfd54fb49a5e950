"""IoU track linking across keyframes."""

from __future__ import annotations

import numpy as np

from evad.inference.tracks import IouTracker, greedy_iou_match, link_tracks


def test_a_slowly_moving_box_keeps_its_id_and_a_jump_starts_a_new_one():
    boxes = [np.array([[10.0 + 4 * k, 10, 50 + 4 * k, 90]]) for k in range(5)]  # 4 px per keyframe
    boxes.append(np.array([[200.0, 10, 240, 90]]))  # jumps across the frame
    ids = link_tracks(boxes)
    assert [int(i[0]) for i in ids] == [1, 1, 1, 1, 1, 2]


def test_ids_follow_boxes_not_their_order_and_are_never_reused():
    tracker = IouTracker()
    a, b = [0.0, 0, 40, 80], [100.0, 0, 140, 80]
    assert tracker.update(np.array([a, b])).tolist() == [1, 2]
    assert tracker.update(np.array([b, a])).tolist() == [2, 1]  # swapped order, same people
    assert tracker.update(np.zeros((0, 4))).tolist() == []  # nobody on this keyframe
    assert tracker.update(np.array([a])).tolist() == [3]  # tracks do not survive a gap


def test_greedy_matching_takes_the_best_overlap_first_and_respects_the_threshold():
    previous = np.array([[0.0, 0, 10, 10], [5.0, 0, 15, 10]])
    current = np.array([[5.0, 0, 15, 10], [30.0, 30, 40, 40]])
    assert greedy_iou_match(previous, current, 0.3) == {0: 1}  # IoU 1 beats IoU 1/3
    assert greedy_iou_match(previous, current[:1], 1.01) == {}
    assert greedy_iou_match(np.zeros((0, 4)), current, 0.3) == {}
