"""Reference points that make a frame-mAP readable: how well the boxes find people, and what a
classifier that learned nothing scores on them.

A frame-mAP mixes localization and classification. Two numbers beside it say which part learned:

* **person AP**: AP@0.5 of the kept person boxes ranked by their person score, against every
  ground-truth person (all of a keyframe's rows for one box are one person), with the official
  AVA matching (`evaluate_ava` with a single "person" class). Boxes under the person threshold
  were never kept, so recall stops where they start.
* **class-share mAP**: the frame-mAP of the same detections after every action score is replaced
  by that class's share of the training boxes, i.e. the scores of a classifier that learned only
  how common each action is. The boxes keep their places, so the difference between the
  detector's frame-mAP and this one is what its action scores add. Constant scores tie; the ties
  are broken at random and the APs averaged over `seeds` orders (an estimate of the expected AP).

Example::

    >>> from evad.evaluation.ava import read_detections, read_groundtruth, read_labelmap
    >>> names = read_labelmap("synth/annotations/labelmap.pbtxt")  # doctest: +SKIP
    >>> share = class_shares(read_groundtruth("synth/annotations/train.csv"), names)  # doctest: +SKIP
    >>> result = class_share_map(read_groundtruth("synth/annotations/val.csv"),
    ...     read_detections("run/eval/detections.csv"), names, share)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from evad.evaluation.ava import AvaResult, AvaTable, Key, evaluate_ava
from evad.evaluation.tubes import average_precision

PERSON = 1  # the one class of the person-AP tables


def distinct_boxes(table: AvaTable) -> dict[Key, np.ndarray]:
    """Keyframe key -> its distinct boxes (n, 4), sorted; a table has one row per (box, class)."""
    out: dict[Key, set] = {}
    for k, box in zip(table.row_key.tolist(), np.round(table.boxes, 5), strict=True):
        out.setdefault(table.keys[k], set()).add(tuple(box.tolist()))
    # n sorted (x1, y1, x2, y2) tuples -> (n, 4)
    return {key: np.array(sorted(boxes)).reshape(-1, 4) for key, boxes in out.items()}


def class_shares(table: AvaTable, classes: Iterable[int]) -> dict[int, float]:
    """Class id -> the share of the table's distinct boxes (people) that carry it."""
    num_boxes = sum(len(boxes) for boxes in distinct_boxes(table).values())
    return {int(c): float(np.sum(table.labels == c)) / max(num_boxes, 1) for c in classes}


def person_groundtruth(groundtruth: AvaTable) -> AvaTable:
    """One row per distinct ground-truth box, labelled `PERSON`."""
    index = {key: i for i, key in enumerate(groundtruth.keys)}
    per_key = distinct_boxes(groundtruth)
    row_key = np.concatenate([np.full(len(b), index[k], np.int64) for k, b in per_key.items()] or [[]])
    boxes = np.concatenate([*per_key.values(), np.zeros((0, 4))])
    return AvaTable(
        source=f"{groundtruth.source} (people)",
        keys=groundtruth.keys,
        row_key=row_key.astype(np.int64),
        boxes=boxes,
        labels=np.full(len(boxes), PERSON, np.int64),
        scores=np.ones(len(boxes)),
    )


def person_detections(
    keys: Sequence[Key], boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> AvaTable:
    """A person table from per-keyframe (n, 4) normalised boxes and their (n,) person scores."""
    row_key = np.concatenate([np.full(len(b), i, np.int64) for i, b in enumerate(boxes)] or [[]])
    # per keyframe (n, 4), or (0,) with no boxes -> (n, 4); concatenated -> (N, 4)
    flat = np.concatenate([*(np.asarray(b, np.float64).reshape(-1, 4) for b in boxes), np.zeros((0, 4))])
    return AvaTable(
        source="person detections",
        keys=list(keys),
        row_key=row_key.astype(np.int64),
        boxes=flat,
        labels=np.full(len(flat), PERSON, np.int64),
        # per keyframe (*shape) -> (n,) person scores; concatenated -> (N,)
        scores=np.concatenate([*(np.asarray(s, np.float64).reshape(-1) for s in scores), np.zeros(0)]),
    )


def person_ap(groundtruth: AvaTable, detections: AvaTable, exclusions: Iterable[Key] = ()) -> float:
    """AP@0.5 of a person table (`person_detections`) against every ground-truth person."""
    return evaluate_ava(person_groundtruth(groundtruth), detections, {PERSON: "person"}, exclusions).mean_ap


def class_share_scores(table: AvaTable, share: Mapping[int, float], seed: int = 0) -> AvaTable:
    """`table` with each row's score replaced by its class's share, ties broken at random by `seed`."""
    noise = np.random.default_rng(seed).uniform(0, 1e-6, len(table))
    scores = np.array([share.get(int(c), 0.0) for c in table.labels], dtype=np.float64) + noise
    return dataclasses.replace(table, scores=scores)


def class_share_map(
    groundtruth: AvaTable,
    detections: AvaTable,
    labelmap: Mapping[int, str],
    share: Mapping[int, float],
    exclusions: Iterable[Key] = (),
    seeds: int = 20,
) -> tuple[float, dict[int, float]]:
    """Frame-mAP and per-class AP of `detections` rescored by `class_share_scores`, averaged over
    `seeds` random tie orders."""
    excluded = set(exclusions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows of unscored classes: the detector's own scoring warned
        results: list[AvaResult] = [
            evaluate_ava(groundtruth, class_share_scores(detections, share, seed), labelmap, excluded)
            for seed in range(seeds)
        ]
    per_class = {c: float(np.mean([r.per_class[c] for r in results])) for c in results[0].per_class}
    return float(np.mean([r.mean_ap for r in results])), per_class


def per_class_ap(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Actor-level AP of each class: every ground-truth person is one sample, scored with its own
    (true) box, so localization plays no part (`benchmarks/actor_probe.py`, `cue_learnability.py`).

    Args:
        scores: ``(A, K)`` each person's score for each class.
        labels: ``(A, K)`` multi-hot ground truth.

    Returns:
        ``(K,)`` AP of each class, NaN for a class with no positive person.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    aps = np.full(labels.shape[1], np.nan)
    for k in range(labels.shape[1]):
        positives = int(labels[:, k].sum())
        if positives:
            order = np.argsort(-scores[:, k], kind="stable")
            aps[k] = average_precision(labels[order, k], positives)
    return aps
