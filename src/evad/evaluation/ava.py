"""AVA frame-mAP with the official ActivityNet semantics (SPEC section 10).

The numbers agree with the official scorer (ActivityNet ``Evaluation/get_ava_performance.py``
with an excluded-timestamps file) on any valid input, including the order-dependent corners:
which of several equal-score detections survive the 50-per-keyframe cap, which equal-IoU
ground-truth box a detection takes, and how ``np.argsort`` orders equal scores. The rules:

- only the label map's classes count; rows of other classes are dropped (with a warning);
- a keyframe is (video id, timestamp printed as a number with 6 decimals), so ``902``, ``0902``
  and ``902.0`` are one keyframe;
- per keyframe, the 50 highest-scoring detections are kept, fed in file order into a min-heap
  that a row enters only when its score is strictly greater than the heap's smallest;
- excluded keyframes are dropped; detections on keyframes the ground-truth CSV never mentions are
  ignored (with a warning), while a keyframe it mentions without a box of the class makes them
  false positives;
- per keyframe and class, detections in descending score take their single best-IoU box (first
  box on ties); a hit needs IoU >= 0.5 and a box still free, there is no second choice. (With
  ``input_order`` and no cap, they take them in the order given instead: the evaluation in EVAD's
  own code, see :func:`evaluate_ava`.)
  detections with zero or negative width or height are dropped after the cap (inverted boxes with
  a warning: they usually mean swapped columns);
- AP is the PASCAL VOC all-points area under the precision envelope; classes with ground truth
  but no detections score 0; classes without ground truth are left out of the mean.

Reading (`evad.evaluation.ava_io`, re-exported here) is vectorised: a 1.5-million-row detections
file is read and scored in a few seconds (``python benchmarks/bench_ava_eval.py``), where the
official scorer needs about 40.
"""

from __future__ import annotations

import heapq
import itertools
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evad.errors import UserError
from evad.evaluation.ava_io import (
    AvaInputWarning,
    AvaTable,
    Key,
    keyframe_key,
    read_detections,
    read_exclusions,
    read_groundtruth,
    read_labelmap,
    write_detections_csv,
    write_labelmap,
)

__all__ = [
    "GROUPS",
    "IOU_THRESHOLD",
    "MAX_DETECTIONS_PER_KEYFRAME",
    "AvaEvaluator",
    "AvaInputWarning",
    "AvaResult",
    "AvaTable",
    "evaluate_ava",
    "evaluate_ava_files",
    "keyframe_key",
    "read_detections",
    "read_exclusions",
    "read_groundtruth",
    "read_labelmap",
    "write_detections_csv",
    "write_labelmap",
]

IOU_THRESHOLD = 0.5
MAX_DETECTIONS_PER_KEYFRAME = 50
# AVA's three action groups, by class id (inclusive bounds).
GROUPS: dict[str, tuple[float, float]] = {
    "person_movement": (-np.inf, 14),
    "object_manipulation": (15, 63),
    "person_interaction": (64, np.inf),
}

# ----------------------------------------------------------------------------------------------
# Scoring


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


@dataclass(frozen=True)
class _GroundTruth:
    """Ground truth prepared once for many scorings."""

    source: str
    names: dict[int, str]
    class_ids: np.ndarray  # (C,) sorted label-map ids
    key_index: dict[Key, int]  # keyframes named in the CSV, minus excluded ones
    excluded: frozenset[Key]
    videos: frozenset[str]
    codes: np.ndarray  # (G,) ascending keyframe * C + class position, one per (keyframe, class)
    starts: np.ndarray  # (G,) first box of each code in `boxes`
    counts: np.ndarray  # (G,)
    boxes: np.ndarray  # (B, 4) x1, y1, x2, y2, grouped by code, each group in the official order
    num_gt: np.ndarray  # (C,)
    unknown_class_rows: int


def _class_positions(labels: np.ndarray, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each label in the sorted ``class_ids``, and whether it is there at all."""
    position = np.searchsorted(class_ids, labels)
    np.minimum(position, len(class_ids) - 1, out=position)
    return position, class_ids[position] == labels


def _official_keyframe_rows(rows: Iterable[tuple], capacity: int) -> list[tuple]:
    """The rows of one keyframe as the official reader leaves them.

    Rows ``(score, action_id, y1, x1, y2, x2)`` enter a min-heap in file order (when full, only a
    row scoring strictly more than the smallest replaces it); the heap's array is then sorted by
    descending score, stably, so equal scores keep their heap positions.
    """
    heap: list[tuple] = []
    for row in rows:
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, row)
        elif row[0] > heap[0][0]:
            heapq.heapreplace(heap, row)
    return sorted(heap, key=lambda row: -row[0])


def _simulate(table: AvaTable, rows: np.ndarray, capacity: int) -> tuple[np.ndarray, ...]:
    """Apply :func:`_official_keyframe_rows` to each keyframe of ``rows`` (indices in file order).

    Returns:
        key (K,), rank within keyframe (K,), score (K,), action id (K,), boxes (K, 4) x1, y1, x2, y2.
    """
    rows = rows[np.argsort(table.row_key[rows], kind="stable")]  # grouped by keyframe, file order
    keys = table.row_key[rows]
    if len(rows) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), empty, np.zeros((0, 4))
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True]).tolist()
    x1, y1, x2, y2 = table.boxes[rows].T.tolist()  # (R, 4) -> (4, R)
    tuples = list(zip(table.scores[rows].tolist(), table.labels[rows].tolist(), y1, x1, y2, x2, strict=True))
    out_key, out_rank, out = [], [], []
    for lo, hi in itertools.pairwise(bounds):
        kept = _official_keyframe_rows(tuples[lo:hi], capacity)
        out.extend(kept)
        out_key.extend([int(keys[lo])] * len(kept))
        out_rank.extend(range(len(kept)))
    # K (score, label, y1, x1, y2, x2) rows -> (K, 6)
    values = np.asarray(out, dtype=np.float64).reshape(-1, 6)
    return (
        np.asarray(out_key, dtype=np.int64),
        np.asarray(out_rank, dtype=np.int64),
        values[:, 0],
        np.asarray([row[1] for row in out], dtype=np.int64),
        values[:, [3, 2, 5, 4]],
    )


def _rows(table: AvaTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score, action id and box of the given rows."""
    return table.scores[rows], table.labels[rows], table.boxes[rows]


def _warn(message: str) -> None:
    warnings.warn(message, AvaInputWarning, stacklevel=4)


def _describe_ids(table: AvaTable, mask: np.ndarray) -> str:
    ids = np.unique(table.labels[mask])
    shown = ", ".join(str(i) for i in ids[:10].tolist()) + (", ..." if len(ids) > 10 else "")
    where = f", first at line {int(table.lines[np.argmax(mask)])}" if table.lines is not None else ""
    return f"ids {shown}{where}"


def _prepare_groundtruth(
    table: AvaTable, labelmap: Mapping[int, str], exclusions: Iterable[Key] = ()
) -> _GroundTruth:
    if not labelmap:
        raise UserError("the label map has no classes")
    class_ids = np.array(sorted(labelmap), dtype=np.int64)
    excluded = frozenset(exclusions)
    _, known = _class_positions(table.labels, class_ids)
    unknown = int(np.count_nonzero(~known))
    if unknown:
        _warn(
            f"{table.source}: {unknown} ground-truth rows have classes outside the label map "
            f"({_describe_ids(table, ~known)}); they are ignored, as by the official scorer"
        )
    key_index: dict[Key, int] = {}
    key_to_frame = np.full(len(table.keys), -1, dtype=np.int64)
    for i, key in enumerate(table.keys):
        if key not in excluded:
            key_to_frame[i] = key_index[key] = len(key_index)
    rows = np.flatnonzero(known & (key_to_frame[table.row_key] >= 0))
    _check_groundtruth_boxes(table, rows)
    key, _, _, labels, boxes = _simulate(table, rows, capacity=0)
    class_position = np.searchsorted(class_ids, labels)
    codes = key_to_frame[key] * len(class_ids) + class_position
    order = np.argsort(codes, kind="stable")  # keeps the official order within a (keyframe, class)
    codes, starts, counts = np.unique(codes[order], return_index=True, return_counts=True)
    num_gt = np.bincount(class_position, minlength=len(class_ids))
    if not num_gt.any():
        ids = f"{class_ids[0]}-{class_ids[-1]}" if len(class_ids) > 8 else ", ".join(map(str, class_ids))
        raise UserError(
            f"{table.source}: no ground-truth boxes of the label map's classes (ids {ids}) "
            "outside the excluded keyframes"
        )
    return _GroundTruth(
        source=table.source,
        names={int(k): labelmap[int(k)] for k in class_ids},
        class_ids=class_ids,
        key_index=key_index,
        excluded=excluded,
        videos=frozenset(video for video, _ in table.keys),
        codes=codes,
        starts=starts,
        counts=counts,
        boxes=boxes[order],
        num_gt=num_gt,
        unknown_class_rows=unknown,
    )


def _check_groundtruth_boxes(table: AvaTable, rows: np.ndarray) -> None:
    """Inverted boxes make the official scorer fail; zero-area ones can never be matched."""
    x1, y1, x2, y2 = table.boxes[rows].T  # (R, 4) -> (4, R)
    inverted = (x2 < x1) | (y2 < y1)
    if inverted.any():
        row = rows[np.argmax(inverted)]
        where = f"{table.source}:{int(table.lines[row])}" if table.lines is not None else table.source
        raise UserError(f"{where}: ground-truth box has x2 < x1 or y2 < y1: {table.boxes[row].tolist()}")
    empty = int(np.count_nonzero((x2 == x1) | (y2 == y1)))
    if empty:
        _warn(f"{table.source}: {empty} ground-truth boxes have zero width or height; nothing can match them")


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


def _select_detections(
    gt: _GroundTruth, det: AvaTable, counts: dict[str, int], cap: int, input_order: bool = False
) -> tuple[np.ndarray, ...]:
    """Class filter, keyframe filter and cap (`cap` best per keyframe; 0: none), in the official order
    (by descending score in each keyframe), or in the input's order with `input_order` (no cap).

    Returns:
        keyframe (D,) index into ``det.keys``, rank within keyframe (D,), score (D,),
        class position (D,), boxes (D, 4) x1, y1, x2, y2, and the rank of each det key in the
        official image order.
    """
    position, known = _class_positions(det.labels, gt.class_ids)
    counts["unknown_class_rows"] = int(np.count_nonzero(~known))
    if counts["unknown_class_rows"]:
        _warn(
            f"{det.source}: {counts['unknown_class_rows']} detection rows have classes outside "
            f"the label map ({_describe_ids(det, ~known)}); they are ignored, as by the official scorer"
        )
    # Keyframe status: >= 0 scored, -1 keyframe absent from the ground truth, -2 excluded,
    # -3 video absent from the ground truth.
    status = np.empty(len(det.keys), dtype=np.int64)
    for i, key in enumerate(det.keys):
        frame = gt.key_index.get(key)
        if frame is not None:
            status[i] = frame
        elif key in gt.excluded:
            status[i] = -2
        else:
            status[i] = -1 if key[0] in gt.videos else -3
    row_status = status[det.row_key]
    for code, name, what in (
        (-3, "unknown_video_rows", "videos absent from the ground truth"),
        (-1, "unknown_keyframe_rows", "keyframes absent from the ground truth"),
        (-2, "excluded_rows", ""),
    ):
        mask = known & (row_status == code)
        counts[name] = int(np.count_nonzero(mask))
        if counts[name] and what:
            frames = len(np.unique(det.row_key[mask]))
            line = f", first at line {int(det.lines[np.argmax(mask)])}" if det.lines is not None else ""
            _warn(
                f"{det.source}: {counts[name]} detection rows ({frames} keyframes) are on {what}{line}; "
                "they are ignored, as by the official scorer"
            )
    selected = np.flatnonzero(known & (row_status >= 0))
    row_key = det.row_key[selected]
    score = det.scores[selected]

    # Official image order: first appearance of a keyframe among the label-map rows.
    first = np.full(len(det.keys), len(selected), dtype=np.int64)
    np.minimum.at(first, row_key, np.arange(len(selected)))
    image_rank = np.empty(len(det.keys), dtype=np.int64)
    image_rank[np.argsort(first, kind="stable")] = np.arange(len(det.keys))
    if input_order:  # EVAD's own evaluation: every detection, matched in the order given
        rows = selected[np.argsort(row_key, kind="stable")]  # grouped by keyframe, input order within
        key = det.row_key[rows]
        rank = np.arange(len(rows)) - np.searchsorted(key, key)  # place within its keyframe
        counts["over_cap_rows"] = 0
        score, label, boxes = _rows(det, rows)
        return key, rank, score, np.searchsorted(gt.class_ids, label), boxes, image_rank, status

    # Cap: keep the `cap` best per keyframe. Sorting by keyframe then descending score gives the
    # official result unless ties make it depend on the heap (checked below), so the order of
    # equal scores is free here and the sorts need not be stable, except the last.
    order = np.argsort(-score)
    key_type = np.uint16 if len(det.keys) <= 1 << 16 else np.int64  # uint16 sorts by radix
    order = order[np.argsort(row_key[order].astype(key_type), kind="stable")]
    sorted_key = row_key[order]
    sorted_score = score[order]
    new_group = np.r_[True, sorted_key[1:] != sorted_key[:-1]] if len(order) else np.zeros(0, bool)
    group_start = np.flatnonzero(new_group)
    group_size = np.diff(np.r_[group_start, len(order)])
    rank = np.arange(len(order)) - np.repeat(group_start, group_size)
    kept = rank < cap if cap > 0 else np.ones(len(rank), dtype=bool)
    counts["over_cap_rows"] = int(np.count_nonzero(~kept))
    full = group_start[group_size > cap] if cap > 0 else np.zeros(0, dtype=np.int64)
    ambiguous = [sorted_key[full[sorted_score[full + cap - 1] == sorted_score[full + cap]]]]
    # Equal scores of one class with different boxes at a keyframe: their order matters. (Any
    # order of a run of equal (keyframe, class, score) has two different neighbours unless all
    # its boxes are equal.)
    kept_rows = selected[order[kept]]
    group_k = det.row_key[kept_rows] * len(gt.class_ids) + position[kept_rows]
    by_value = kept_rows[np.lexsort((det.scores[kept_rows], group_k))]
    group_k = det.row_key[by_value] * len(gt.class_ids) + position[by_value]
    score_k, box_k = det.scores[by_value], det.boxes[by_value]
    tied = (group_k[1:] == group_k[:-1]) & (score_k[1:] == score_k[:-1])
    tied &= np.any(box_k[1:] != box_k[:-1], axis=1)
    ambiguous.append(det.row_key[by_value[1:][tied]])
    ambiguous_keys = np.unique(np.concatenate(ambiguous))

    plain = kept & ~np.isin(sorted_key, ambiguous_keys)
    plain_rows = selected[order[plain]]
    parts = [(sorted_key[plain], rank[plain], *_rows(det, plain_rows))]
    if len(ambiguous_keys):
        exact_rows = selected[np.isin(row_key, ambiguous_keys)]
        parts.append(_simulate(det, exact_rows, capacity=cap))
    key, rank, score, label, boxes = (np.concatenate(column) for column in zip(*parts, strict=True))
    return key, rank, score, np.searchsorted(gt.class_ids, label), boxes, image_rank, status


def _score(gt: _GroundTruth, det: AvaTable, cap: int, input_order: bool = False) -> AvaResult:
    if input_order and cap:
        raise ValueError(
            "input_order reproduces EVAD's own evaluation, which keeps every detection: "
            f"max_per_keyframe must be 0, got {cap}"
        )
    counts: dict[str, int] = {"detection_rows": len(det)}
    key, rank, score, class_position, boxes, image_rank, status = _select_detections(
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
        _warn(f"{det.source}: no detections; every class scores AP 0")
    elif np.all(np.any(det.boxes > 1, axis=1)):
        _warn(
            f"{det.source}: every box has a coordinate above 1; AVA boxes are normalised to [0, 1], "
            "these look like pixels"
        )
    outside = (det.scores < 0) | (det.scores > 1)
    if outside.any():  # ranked as they are, as officially; usually a ground-truth file (person ids)
        first = int(np.argmax(outside))
        where = f"{det.source}:{int(det.lines[first])}" if det.lines is not None else det.source
        _warn(
            f"{where}: {int(outside.sum())} scores lie outside [0, 1] (this one, {det.scores[first]:g}, "
            "first); is this a ground-truth file, whose 8th column is a person id?"
        )
    elif counts["detection_rows"] and np.all(det.scores == 1):
        _warn(
            f"{det.source}: every detection scores 1.0 (7-column rows have no score), so the AP ranks "
            "them in file order"
        )
    inverted = (det.boxes[:, 2] < det.boxes[:, 0]) | (det.boxes[:, 3] < det.boxes[:, 1])
    if inverted.any():  # dropped below, as officially; usually swapped columns
        first = int(np.argmax(inverted))
        where = f"{det.source}:{int(det.lines[first])}" if det.lines is not None else det.source
        _warn(
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
    if largest_id > 100_000:
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


def evaluate_ava(
    groundtruth: AvaTable,
    detections: AvaTable,
    labelmap: Mapping[int, str],
    exclusions: Iterable[Key] = (),
    max_per_keyframe: int = MAX_DETECTIONS_PER_KEYFRAME,
    input_order: bool = False,
) -> AvaResult:
    """Score detections against ground truth with the official AVA protocol.

    Args:
        groundtruth: Ground-truth rows (:func:`read_groundtruth`).
        detections: Detection rows (:func:`read_detections`, or :meth:`AvaEvaluator.detections`).
        labelmap: Class id -> name of the evaluated classes (:func:`read_labelmap`).
        exclusions: Keyframe keys to ignore (:func:`read_exclusions`).
        max_per_keyframe: Detections kept per keyframe, highest scores first: 50 in the ActivityNet
            scorer (SPEC section 10); 0 keeps all.
        input_order: Match each keyframe's detections to the ground truth in their input order
            (file or processing order: for evad's detections, the model's query order) instead of
            by descending score; needs `max_per_keyframe` 0. With both, this is the evaluation in
            EVAD's own code, which made the paper's numbers: it neither caps nor sorts, so of two
            boxes of a class on one person the earlier query takes the hit even if it scores lower.

    Warns:
        AvaInputWarning: For rows the official scorer silently ignores.

    Raises:
        UserError: If the ground truth has no box of the label map's classes.
    """
    if max_per_keyframe < 0:
        raise ValueError(f"max_per_keyframe must be >= 0, got {max_per_keyframe}")
    gt = _prepare_groundtruth(groundtruth, labelmap, exclusions)
    return _score(gt, detections, max_per_keyframe, input_order)


def evaluate_ava_files(
    groundtruth: str | os.PathLike,
    detections: str | os.PathLike,
    labelmap: str | os.PathLike,
    exclusions: str | os.PathLike | None = None,
    max_per_keyframe: int = MAX_DETECTIONS_PER_KEYFRAME,
    input_order: bool = False,
) -> AvaResult:
    """Read the files and score them (see :func:`evaluate_ava`).

    Example:
        >>> result = evaluate_ava_files("ava_val_v2.2.csv", "detections.csv",
        ...     "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        ...     "ava_val_excluded_timestamps_v2.2.csv")  # doctest: +SKIP
        >>> print(f"{100 * result.mean_ap:.2f}")  # doctest: +SKIP
    """
    names = read_labelmap(labelmap)
    excluded = read_exclusions(exclusions) if exclusions is not None else set()
    return evaluate_ava(
        read_groundtruth(groundtruth),
        read_detections(detections),
        names,
        excluded,
        max_per_keyframe,
        input_order,
    )


# ----------------------------------------------------------------------------------------------
# Evaluator for a training or evaluation loop


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


class AvaEvaluator:
    """Frame-mAP over detections collected keyframe by keyframe (reset / process / evaluate).

    Scores exactly like writing the detections to a CSV in processing order (one row per box and
    class, boxes in turn) and scoring the file; the ground truth is read and prepared once.

    Example:
        >>> evaluator = AvaEvaluator("ava_val_v2.2.csv", "ava_action_list_v2.2.pbtxt",
        ...                          "ava_val_excluded_timestamps_v2.2.csv")  # doctest: +SKIP
        >>> postprocess = evad.PostProcess()  # doctest: +SKIP
        >>> for batch in loader:  # evad.data batches  # doctest: +SKIP
        ...     found = postprocess(model(batch.clips, batch.image_sizes), target_sizes=batch.orig_sizes)
        ...     evaluator.process(batch.videos, batch.timestamps,
        ...                       [d.normalized_boxes() for d in found], [d.action_scores for d in found])
        >>> print(evaluator.evaluate().mean_ap)  # doctest: +SKIP
    """

    def __init__(
        self,
        groundtruth: str | os.PathLike | AvaTable,
        labelmap: str | os.PathLike | Mapping[int, str],
        exclusions: str | os.PathLike | Iterable[tuple[str, object]] | None = None,
        class_ids: Sequence[int] | None = None,
        max_per_keyframe: int = MAX_DETECTIONS_PER_KEYFRAME,
        input_order: bool = False,
    ) -> None:
        """Read and prepare the ground truth.

        Args:
            groundtruth: Ground-truth CSV, or a table from :func:`read_groundtruth`.
            labelmap: Label map ``.pbtxt``, or class id -> name.
            exclusions: Excluded-timestamps CSV, or (video id, second) pairs.
            class_ids: Action id of each score column given to :meth:`process`; by default
                column j is class j + 1 (AVA's 80 classes).
            max_per_keyframe: Cap on detections per keyframe (see :func:`evaluate_ava`).
            input_order: Match in processing order (see :func:`evaluate_ava`).
        """
        if max_per_keyframe < 0:
            raise ValueError(f"max_per_keyframe must be >= 0, got {max_per_keyframe}")
        if input_order and max_per_keyframe:
            raise ValueError(f"input_order needs max_per_keyframe 0, got {max_per_keyframe}")
        self.max_per_keyframe = max_per_keyframe
        self.input_order = input_order
        names = dict(labelmap) if isinstance(labelmap, Mapping) else read_labelmap(labelmap)
        table = groundtruth if isinstance(groundtruth, AvaTable) else read_groundtruth(groundtruth)
        if exclusions is None:
            excluded: set[Key] = set()
        elif isinstance(exclusions, str | os.PathLike):
            excluded = read_exclusions(exclusions)
        else:
            excluded = {keyframe_key(str(video), second) for video, second in exclusions}
        self._groundtruth = _prepare_groundtruth(table, names, excluded)
        self.class_ids = None if class_ids is None else np.asarray(class_ids, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget the detections processed so far."""
        self._key_index: dict[Key, int] = {}
        self._keys: list[Key] = []
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def process(
        self, video_ids: Sequence[str], seconds: Sequence[object], boxes: Sequence[Any], scores: Sequence[Any]
    ) -> None:
        """Add the detections of a batch of keyframes.

        Args:
            video_ids: Video id of each keyframe.
            seconds: Timestamp of each keyframe (number, numeric string or 0-d tensor).
            boxes: Per keyframe, (P, 4) normalised x1, y1, x2, y2 person boxes (arrays or tensors).
            scores: Per keyframe, (P, C) action scores, column j for class ``class_ids[j]``.

        Raises:
            ValueError: On inconsistent lengths or shapes, or a timestamp that is not a number.
        """
        if not len(video_ids) == len(seconds) == len(boxes) == len(scores):
            raise ValueError("video_ids, seconds, boxes and scores must have one entry per keyframe")
        for video_id, second, box, score in zip(video_ids, seconds, boxes, scores, strict=True):
            box = _as_numpy(box).reshape(-1, 4)  # (P, 4), or (0,) with no boxes -> (P, 4)
            score = _as_numpy(score)
            if score.ndim != 2 or score.shape[0] != box.shape[0]:
                raise ValueError(f"scores must be (P, C) for P = {box.shape[0]} boxes, got {score.shape}")
            num_boxes, num_classes = score.shape
            class_ids = self.class_ids if self.class_ids is not None else np.arange(1, num_classes + 1)
            if len(class_ids) != num_classes:
                raise ValueError(f"scores have {num_classes} columns but class_ids has {len(class_ids)}")
            if hasattr(second, "item"):
                second = second.item()
            key = keyframe_key(str(video_id), second)
            index = self._key_index.setdefault(key, len(self._keys))
            if index == len(self._keys):
                self._keys.append(key)
            self._chunks.append(
                (
                    np.full(num_boxes * num_classes, index, dtype=np.int64),
                    np.repeat(box, num_classes, axis=0),  # (P, 4) -> (P * C, 4), box-major rows
                    np.tile(class_ids, num_boxes),
                    score.reshape(-1),  # (P, C) -> (P * C,), box-major rows
                )
            )

    def detections(self) -> AvaTable:
        """The processed detections as a table (for :func:`write_detections_csv`)."""
        empty = (np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))
        row_key, boxes, labels, scores = (
            np.concatenate([*column, like]) for *column, like in zip(*self._chunks, empty, strict=True)
        )
        return AvaTable(
            source="detections processed by AvaEvaluator",
            keys=list(self._keys),
            row_key=row_key,
            boxes=boxes,
            labels=labels.astype(np.int64),
            scores=scores,
        )

    def evaluate(self) -> AvaResult:
        """Score everything processed since the last :meth:`reset`."""
        return _score(self._groundtruth, self.detections(), self.max_per_keyframe, self.input_order)
