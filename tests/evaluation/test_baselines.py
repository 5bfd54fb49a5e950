"""Reference points beside a frame-mAP: the person AP of the kept boxes and the class-share mAP."""

from __future__ import annotations

import numpy as np
import pytest

from evad.evaluation.ava import AvaTable, keyframe_key
from evad.evaluation.baselines import (
    class_share_map,
    class_shares,
    per_class_ap,
    person_ap,
    person_detections,
    person_groundtruth,
)

P, Q = [0.1, 0.1, 0.4, 0.9], [0.6, 0.1, 0.9, 0.9]
NOBODY = [0.42, 0.0, 0.58, 0.1]
KEY, OTHER = keyframe_key("v", 2), keyframe_key("v", 3)


def table(rows: list[tuple], keys=(KEY,), source="rows") -> AvaTable:
    """Rows (key index, box, label, score)."""
    return AvaTable(
        source=source,
        keys=list(keys),
        row_key=np.array([r[0] for r in rows], np.int64),
        boxes=np.array([r[1] for r in rows], np.float64).reshape(-1, 4),
        labels=np.array([r[2] for r in rows], np.int64),
        scores=np.array([r[3] for r in rows], np.float64),
    )


# P stands and waves (two rows, one person), Q stands.
TRUTH = table([(0, P, 1, 1.0), (0, P, 2, 1.0), (0, Q, 1, 1.0)])


def test_a_person_is_one_box_however_many_actions():
    people = person_groundtruth(TRUTH)
    assert len(people) == 2 and set(people.labels.tolist()) == {1}
    assert sorted(map(tuple, people.boxes.tolist())) == sorted([tuple(P), tuple(Q)])


def test_person_ap_ranks_the_kept_boxes_by_person_score():
    # P (0.9), a box on nobody (0.8), a second box on P (0.7), Q (0.6): hit, miss, miss, hit.
    boxes = np.array([P, NOBODY, [0.1, 0.1, 0.4, 0.8], Q])
    people = person_detections([KEY], [boxes], [np.array([0.9, 0.8, 0.7, 0.6])])
    # Precision 1 at recall 0.5, then 2/4 at recall 1.
    assert person_ap(TRUTH, people) == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    # The stray box ranked first: miss, hit, miss, hit -> precision 1/2 at recall 0.5 and at recall 1.
    stray_first = person_detections([KEY], [boxes], [np.array([0.8, 0.9, 0.7, 0.6])])
    assert person_ap(TRUTH, stray_first) == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)


def test_person_ap_skips_excluded_keyframes():
    truth = table([(0, P, 1, 1.0), (1, Q, 1, 1.0)], keys=(KEY, OTHER))
    # P found (score 1) on the first keyframe, a box on nobody (0.5) on the second, where Q is.
    scores = [np.ones(1), np.full(1, 0.5)]
    people = person_detections([KEY, OTHER], [np.array([P]), np.array([NOBODY])], scores)
    assert person_ap(truth, people) == pytest.approx(0.5)
    assert person_ap(truth, people, exclusions={OTHER}) == pytest.approx(1.0)


def test_class_shares_count_people_not_rows():
    train = table([(0, P, 1, 1.0), (0, P, 2, 1.0), (0, Q, 1, 1.0), (1, P, 1, 1.0)], keys=(KEY, OTHER))
    assert class_shares(train, [1, 2, 3]) == {1: 1.0, 2: pytest.approx(1 / 3), 3: 0.0}


def test_class_share_map_is_the_expected_ap_of_a_classifier_that_learned_nothing():
    # One box on P and one on Q, each scored on both classes. Stand: both boxes are people who stand,
    # AP 1 in any order. Wave: P or Q first with equal chance -> AP 1 or 1/2, expected 3/4.
    rows = [(0, box, c, 0.0) for box in (P, Q) for c in (1, 2)]
    names = {1: "stand", 2: "wave"}
    mean_ap, per_class = class_share_map(TRUTH, table(rows), names, {1: 0.9, 2: 0.2}, seeds=400)
    assert per_class[1] == 1.0
    assert per_class[2] == pytest.approx(0.75, abs=0.05)
    assert mean_ap == pytest.approx((per_class[1] + per_class[2]) / 2)
    # The detector's own scores do not matter: only the boxes are kept.
    confident = [(0, box, c, 0.99 if box is Q and c == 2 else 0.01) for box in (P, Q) for c in (1, 2)]
    again, _ = class_share_map(TRUTH, table(confident), names, {1: 0.9, 2: 0.2}, seeds=400)
    assert again == mean_ap


def test_per_class_ap_ranks_people_by_score():
    scores = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6], [0.3, 0.1]])
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    aps = per_class_ap(scores, labels)
    # class 1's positives rank 1st and 4th: precision 1 up to recall 0.5, then from 1/3 (3rd) to 1/2
    # (4th) over the last half of the recall (trapezoids)
    assert aps[0] == pytest.approx(0.5 * 1.0 + 0.5 * (1 / 3 + 1 / 2) / 2)
    assert np.isnan(aps[1])  # no positive person
    assert per_class_ap(labels + 0.0, labels)[0] == 1.0  # positives first
