"""Which ground-truth boxes and detections the official AVA scorer scores, and in what order.

The official reader (ActivityNet ``Evaluation/get_ava_performance.py``) keeps the label map's
classes, drops excluded keyframes and, per keyframe, pushes the rows in file order through a
min-heap (capacity 50 for detections) whose array it then sorts by score; which rows survive and
the order they come in decide which detection takes a box. This module reproduces that:
:func:`prepare_groundtruth` groups the ground-truth boxes by (keyframe, class) in the official
order, once for many scorings, and :func:`select_detections` filters and caps the detections with
vectorised sorts, simulating the heap row by row only on the keyframes where ties make its order
matter. `evad.evaluation.ava.scoring` matches what they return; the rules are listed in
`evad.evaluation.ava`.
"""

from __future__ import annotations

import heapq
import itertools
import numbers
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from evad.errors import UserError, outside_stacklevel
from evad.evaluation.ava.table import AvaInputWarning, AvaTable, Key


@dataclass(frozen=True)
class GroundTruth:
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


def warn(message: str) -> None:
    """Warn of input the official scorer silently ignores (an :class:`AvaInputWarning`)."""
    warnings.warn(message, AvaInputWarning, stacklevel=outside_stacklevel())


def _describe_ids(table: AvaTable, mask: np.ndarray) -> str:
    ids = np.unique(table.labels[mask])
    # the CSV reader stores ids beyond int64 as int64's minimum, an id no file holds
    words = ["beyond int64" if i == np.iinfo(np.int64).min else str(i) for i in ids[:10].tolist()]
    shown = ", ".join(words) + (", ..." if len(ids) > 10 else "")
    where = f", first at line {int(table.lines[np.argmax(mask)])}" if table.lines is not None else ""
    return f"ids {shown}{where}"


def prepare_groundtruth(
    table: AvaTable, labelmap: Mapping[int, str], exclusions: Iterable[Key] = ()
) -> GroundTruth:
    """Prepare the ground truth once for many scorings: the label map's classes on the keyframes
    not excluded, boxes grouped by (keyframe, class) in the official order.

    Raises:
        UserError: If the label map is empty, a ground-truth box is inverted, or no box of the label
            map's classes lies outside the excluded keyframes.
    """
    if not labelmap:
        raise UserError("the label map has no classes")
    wrong = [k for k in labelmap if isinstance(k, bool) or not isinstance(k, numbers.Integral)]
    if wrong:
        raise ValueError(f"the label map's keys must be integer class ids, got {wrong[0]!r}")
    class_ids = np.array(sorted(labelmap), dtype=np.int64)
    excluded = frozenset(exclusions)
    _, known = _class_positions(table.labels, class_ids)
    unknown = int(np.count_nonzero(~known))
    if unknown:
        warn(
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
    _warn_of_repeated_rows(table, rows)
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
    return GroundTruth(
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
        warn(f"{table.source}: {empty} ground-truth boxes have zero width or height; nothing can match them")


def _warn_of_repeated_rows(table: AvaTable, rows: np.ndarray) -> None:
    """A row repeating an earlier one (same keyframe, class and box) is a second box to find; the
    official scorer counts it so, and one detection can match only one of the two."""
    # R rows of (keyframe, class, x1, y1, x2, y2) -> (R, 6)
    fields = np.column_stack([table.row_key[rows], table.labels[rows], table.boxes[rows]]).astype(np.float64)
    _, first = np.unique(fields, axis=0, return_index=True)
    repeated = len(rows) - len(first)
    if repeated:
        is_first = np.zeros(len(rows), dtype=bool)
        is_first[first] = True
        row = rows[np.argmax(~is_first)]
        where = f", first at line {int(table.lines[row])}" if table.lines is not None else ""
        warn(
            f"{table.source}: {repeated} ground-truth rows repeat an earlier row's keyframe, class and box"
            f"{where}; each counts as one more box to find, as in the official scorer"
        )


def select_detections(
    gt: GroundTruth, det: AvaTable, counts: dict[str, int], cap: int, input_order: bool = False
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
        warn(
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
            warn(
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
