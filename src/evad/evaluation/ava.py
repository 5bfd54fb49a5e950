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
  box on ties); a hit needs IoU >= 0.5 and a box still free, there is no second choice;
  detections with zero or negative width or height are dropped after the cap (inverted boxes with
  a warning: they usually mean swapped columns);
- AP is the PASCAL VOC all-points area under the precision envelope; classes with ground truth
  but no detections score 0; classes without ground truth are left out of the mean.

Reading is vectorised: a 1.5-million-row detections file is read and scored in a few seconds
(``python benchmarks/bench_ava_eval.py``), where the official scorer needs about 40.
"""

from __future__ import annotations

import codecs
import csv
import heapq
import itertools
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from evad.errors import UserError

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
]

IOU_THRESHOLD = 0.5
MAX_DETECTIONS_PER_KEYFRAME = 50
# AVA's three action groups, by class id (inclusive bounds).
GROUPS: dict[str, tuple[float, float]] = {
    "person_movement": (-np.inf, 14),
    "object_manipulation": (15, 63),
    "person_interaction": (64, np.inf),
}

Key = tuple[str, str]
_MAX_FIELD = 64  # widest field (and video,second prefix) the vectorised reader handles
_INT64_MIN = np.iinfo(np.int64).min  # stands for action ids that do not fit in int64 (never in a map)
_COLUMNS = ("video_id", "second", "x1", "y1", "x2", "y2", "action_id", "score")


class AvaInputWarning(UserWarning):
    """Input the official scorer silently ignores (unknown classes, videos or keyframes)."""


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass
class AvaTable:
    """Rows of an AVA CSV in file order; ground truth and detections share the layout.

    Attributes:
        source: File name (or a description) used in messages.
        keys: Distinct keyframes named by any row, 2-column rows included, in order of appearance.
        row_key: (R,) index into ``keys`` of each box row.
        boxes: (R, 4) normalised x1, y1, x2, y2.
        labels: (R,) action ids.
        scores: (R,) detection scores; 1.0 for 7-column rows. (For 8-column ground truth this is
            the person id, which the official reader also takes as the score; it only decides
            the order of the boxes.)
        lines: (R,) 1-based line numbers, or None for tables built in memory.
    """

    source: str
    keys: list[Key]
    row_key: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    lines: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.row_key)


def keyframe_key(video_id: str, second: object) -> Key:
    """The canonical key of a keyframe: the timestamp as a number printed with 6 decimals.

    Raises:
        ValueError: If ``second`` is not a finite number.
    """
    try:
        value = Decimal(second if isinstance(second, str) else str(second))
    except InvalidOperation:
        raise ValueError(f"timestamp {second!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"timestamp {second!r} is not a finite number")
    # Printed through float like the official key (Decimal's own rounding would differ).
    return video_id, f"{float(value):.6f}"


def read_labelmap(path: str | os.PathLike) -> dict[int, str]:
    """Read a label map ``.pbtxt``: ``name: "..."`` lines, each followed by ``id: N`` or ``label_id: N``.

    Returns:
        Class id -> name, in file order (a repeated id keeps its last name, as officially).

    Raises:
        UserError: If the file cannot be read, a line is malformed, an id is below 1 (the official
            scorer rejects it), or the file has no ids at all.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read label map {source}: {err}") from None
    names: dict[int, str] = {}
    name = ""
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("name:"):
            parts = stripped.split('"')
            if len(parts) < 3:
                raise UserError(f"{source}:{lineno}: expected a quoted class name, got {stripped!r}")
            name = parts[1]
        elif stripped.startswith(("id:", "label_id:")):
            value = stripped.split(":", 1)[1].strip()
            try:
                class_id = int(value)
            except ValueError:
                raise UserError(f"{source}:{lineno}: class id {value!r} is not an integer") from None
            if class_id < 1:
                raise UserError(f"{source}:{lineno}: class id {class_id} is below 1")
            names.pop(class_id, None)
            names[class_id] = name
    if not names:
        raise UserError(
            f"{source}: label map has no class ids (expected 'id: N' or 'label_id: N' lines "
            "after each 'name: \"...\"')"
        )
    return names


def read_groundtruth(path: str | os.PathLike) -> AvaTable:
    """Read an AVA ground-truth CSV.

    Rows are ``video_id, second, x1, y1, x2, y2, action_id[, person_id]``; 2-column rows
    ``video_id, second`` mark keyframes without boxes.

    Raises:
        UserError: Naming the file and 1-based line of the first malformed row.
    """
    return _read_csv(path, allowed=(2, 7, 8))


def read_detections(path: str | os.PathLike) -> AvaTable:
    """Read an AVA detections CSV: ``video_id, second, x1, y1, x2, y2, action_id, score``.

    7-column rows score 1.0 and 2-column rows are accepted and ignored, as officially.

    Raises:
        UserError: Naming the file and 1-based line of the first malformed row.
    """
    return _read_csv(path, allowed=(2, 7, 8))


def read_exclusions(path: str | os.PathLike) -> set[Key]:
    """Read an excluded-timestamps CSV (``video_id, second`` rows) into keyframe keys.

    Raises:
        UserError: Naming the file and 1-based line of the first malformed row.
    """
    return set(_read_csv(path, allowed=(2,)).keys)


def _read_csv(path: str | os.PathLike, allowed: tuple[int, ...]) -> AvaTable:
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = bytearray(os.fstat(file.fileno()).st_size)
            del data[file.readinto(data) :]
    except OSError as err:
        raise UserError(f"cannot read {source}: {err.strerror or err}") from None
    if data.startswith(codecs.BOM_UTF8):  # as spreadsheet programs save UTF-8 CSVs
        del data[: len(codecs.BOM_UTF8)]
    table = _parse_fast(data, source, allowed)
    return table if table is not None else _parse_slow(source, allowed)


def _column_error(source: str, line: int, column: int, value: str, what: str) -> UserError:
    return UserError(f"{source}:{line}: column {column + 1} ({_COLUMNS[column]}) {value!r} {what}")


def _columns_error(source: str, line: int, found: int, allowed: tuple[int, ...]) -> UserError:
    expected = allowed[0] if len(allowed) == 1 else f"{', '.join(map(str, allowed[:-1]))} or {allowed[-1]}"
    got = "an empty line" if found == 0 else f"{found} columns"
    return UserError(f"{source}:{line}: expected {expected} comma-separated columns, found {got}")


class _TimestampKeys:
    """Caches keyframe keys per raw timestamp string (a file has few distinct ones)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.seconds: dict[str, str] = {}
        self.index: dict[Key, int] = {}
        self.keys: list[Key] = []

    def __call__(self, video_id: str, second: str, line: int) -> int:
        canonical = self.seconds.get(second)
        if canonical is None:
            try:
                canonical = keyframe_key(video_id, second)[1]
            except ValueError:
                raise _column_error(self.source, line, 1, second, "is not a finite number") from None
            self.seconds[second] = canonical
        key = (video_id, canonical)
        position = self.index.get(key)
        if position is None:
            position = self.index[key] = len(self.keys)
            self.keys.append(key)
        return position


def _parse_slow(source: str, allowed: tuple[int, ...]) -> AvaTable:
    """Row by row with the csv module: quoted fields, non-ASCII text, unusual widths."""
    keys = _TimestampKeys(source)
    row_key, boxes, labels, scores, lines = [], [], [], [], []
    line = 0
    try:
        with open(source, encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            for row in reader:
                line = reader.line_num
                if len(row) not in allowed:
                    raise _columns_error(source, line, len(row), allowed)
                position = keys(row[0], row[1], line)
                if len(row) < 7:
                    continue
                box = []
                for column in range(2, 6):
                    box.append(_float_field(row[column], source, line, column))
                try:
                    label = int(row[6])
                except ValueError:
                    raise _column_error(source, line, 6, row[6], "is not an integer") from None
                if not _INT64_MIN < label <= np.iinfo(np.int64).max:
                    label = _INT64_MIN
                row_key.append(position)
                boxes.append(box)
                labels.append(label)
                scores.append(_float_field(row[7], source, line, 7) if len(row) == 8 else 1.0)
                lines.append(line)
    except UnicodeDecodeError as err:
        raise UserError(f"{source}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise UserError(f"{source}:{line + 1}: {err}") from None
    return AvaTable(
        source=source,
        keys=keys.keys,
        row_key=np.asarray(row_key, dtype=np.int64),
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),  # (R, 4), or (0,) with no rows -> (R, 4)
        labels=np.asarray(labels, dtype=np.int64),
        scores=np.asarray(scores, dtype=np.float64),
        lines=np.asarray(lines, dtype=np.int64),
    )


def _float_field(text: str, source: str, line: int, column: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _column_error(source, line, column, text, "is not a number") from None
    if not np.isfinite(value):
        raise _column_error(source, line, column, text, "is not a finite number")
    return value


def _gather(arr: np.ndarray, start: np.ndarray, end: np.ndarray, multiple: int = 1) -> np.ndarray | None:
    """(N, w) bytes of the fields arr[start:end], zero-padded; None if a field is too wide."""
    length = end - start
    width = int(length.max()) if len(length) else 1
    width = max(-(-width // multiple) * multiple, multiple)
    if width > _MAX_FIELD:
        return None
    chars = sliding_window_view(arr, width)[start]  # (N, width), a copy
    if len(length) and (width != length.min() or width != length.max()):
        chars *= np.arange(width) < length[:, None]
    return chars


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a (N, k) uint64 array in order of first appearance.

    Returns:
        The first index of each distinct row, and for each row the number of its distinct row.
    """
    hashed = rows[:, 0].copy()
    for column in rows.T[1:]:  # (N, k) -> (k-1, N); wraps around; collisions are checked below
        hashed *= np.uint64(0x9E3779B97F4A7C15)
        hashed += column
    _, first, inverse = np.unique(hashed, return_index=True, return_inverse=True)
    if not np.array_equal(rows[first][inverse], rows):
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    by_appearance = np.argsort(first)
    number = np.empty_like(by_appearance)
    number[by_appearance] = np.arange(len(first))
    return first[by_appearance], number[inverse.reshape(-1)]  # (N,), or (N, 1) on NumPy 2.0.0 -> (N,)


def _parse_fast(data: bytearray, source: str, allowed: tuple[int, ...]) -> AvaTable | None:
    """Vectorised reader for plain ASCII files; None hands the file to the csv-module reader.

    Fields are located from the comma and newline positions; each numeric column is cut into a
    fixed-width byte array and converted by numpy, whose conversion equals Python's float()/int().
    """
    if not data.isascii() or b'"' in data or b"\x00" in data:
        return None
    if b"\r" in data:  # universal newlines, as the official reader's text-mode file
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data and not data.endswith(b"\n"):
        data += b"\n"
    size = len(data)
    data += b"\n" * _MAX_FIELD  # room for fixed-width windows at the end (in place)
    arr = np.frombuffer(data, dtype=np.uint8)
    body = arr[:size]
    line_end = np.flatnonzero(body == ord("\n"))
    commas = np.flatnonzero(body == ord(","))
    num_lines = len(line_end)
    line_start = np.zeros(num_lines, dtype=np.int64)
    line_start[1:] = line_end[:-1] + 1
    first_comma = np.zeros(num_lines, dtype=np.int64)
    ncols = allowed[-1]
    if len(commas) == (ncols - 1) * num_lines and num_lines:
        # Fast check that every line has exactly `ncols` fields.
        per_line = commas.reshape(num_lines, ncols - 1)  # (L*(ncols-1),) -> (L, ncols-1) comma positions
        uniform = bool(np.all(per_line[:, 0] > line_start) and np.all(per_line[:, -1] < line_end))
    else:
        uniform = False
    if uniform:
        first_comma = np.arange(num_lines, dtype=np.int64) * (ncols - 1)
        num_fields = np.full(num_lines, ncols, dtype=np.int64)
    else:
        commas_before_end = np.searchsorted(commas, line_end)
        first_comma[1:] = commas_before_end[:-1]
        num_fields = commas_before_end - first_comma + 1
        num_fields[line_start == line_end] = 0
        bad = ~np.isin(num_fields, allowed)
        if bad.any():
            first_bad = int(np.argmax(bad))
            raise _columns_error(source, first_bad + 1, int(num_fields[first_bad]), allowed)
    if num_lines == 0:
        return _empty_table(source)

    # Keyframe keys: one Python call per distinct `video_id,second` prefix.
    last = max(len(commas) - 1, 0)
    prefix_end = np.where(num_fields >= 3, commas[np.minimum(first_comma + 1, last)], line_end)
    prefix = _gather(arr, line_start, prefix_end, multiple=8)
    if prefix is None:
        return None
    words = prefix.view(np.uint64)  # (L, w) uint8 -> (L, w/8) uint64: compare 8 bytes at a time
    run_start = np.flatnonzero(np.r_[True, np.any(words[1:] != words[:-1], axis=1)])
    first_run, run_prefix = _unique_rows(words[run_start])
    keys = _TimestampKeys(source)
    prefix_key = np.empty(len(first_run), dtype=np.int64)
    for i, line in enumerate(run_start[first_run].tolist()):
        video_id, second = prefix[line].tobytes().rstrip(b"\0").decode("ascii").split(",", 1)
        prefix_key[i] = keys(video_id, second, line + 1)
    line_key = np.repeat(prefix_key[run_prefix], np.diff(np.r_[run_start, num_lines]))

    rows = np.flatnonzero(num_fields >= 7)
    first = first_comma[rows]
    eight = num_fields[rows] == 8
    lines = rows + 1
    boxes = np.empty((len(rows), 4))
    for column in range(2, 6):
        chars = _gather(arr, commas[first + column - 1] + 1, commas[first + column])
        if chars is None:
            return None
        boxes[:, column - 2] = _to_float(chars, source, lines, column)
    label_end = np.where(eight, commas[np.minimum(first + 6, last)], line_end[rows])
    label_chars = _gather(arr, commas[first + 5] + 1, label_end)
    score_chars = _gather(arr, commas[first[eight] + 6] + 1, line_end[rows[eight]])
    if label_chars is None or score_chars is None:
        return None
    scores = np.ones(len(rows), dtype=np.float64)
    scores[eight] = _to_float(score_chars, source, lines[eight], 7)
    return AvaTable(
        source=source,
        keys=keys.keys,
        row_key=line_key[rows],
        boxes=boxes,
        labels=_to_int(label_chars, source, lines),
        scores=scores,
        lines=lines,
    )


def _empty_table(source: str) -> AvaTable:
    return AvaTable(
        source=source,
        keys=[],
        row_key=np.zeros(0, dtype=np.int64),
        boxes=np.zeros((0, 4)),
        labels=np.zeros(0, dtype=np.int64),
        scores=np.zeros(0),
        lines=np.zeros(0, dtype=np.int64),
    )


_POWERS_OF_TEN = 10.0 ** np.arange(16)


def _fixed_point(chars: np.ndarray) -> np.ndarray | None:
    """Values of a column whose every field is digits with the point at one place ("0.1234").

    The digits form an integer below 2**53 and 10**k is exact, so one correctly rounded division
    gives what float() gives; None when the column is not of that form.
    """
    width = chars.shape[1]
    if not 2 <= width <= 16 or not len(chars):
        return None
    dots = np.flatnonzero(chars[0] == ord("."))
    if len(dots) != 1 or not np.all(chars[:, dots[0]] == ord(".")):
        return None
    digits = chars - np.uint8(ord("0"))  # (N, width); wraps around for anything but a digit
    digits[:, dots[0]] = 0
    if not np.all(digits < 10):
        return None
    weights = np.zeros(width)
    weights[np.arange(width) != dots[0]] = _POWERS_OF_TEN[width - 2 :: -1]
    # Integer-valued partial sums below 2**53 are exact in any summation order.
    return (digits @ weights) / _POWERS_OF_TEN[width - 1 - dots[0]]


def _to_float(chars: np.ndarray, source: str, lines: np.ndarray, column: int) -> np.ndarray:
    values = _fixed_point(chars)
    if values is not None:
        return values
    text = chars.view(f"S{chars.shape[1]}").ravel()  # (N, w) uint8 -> (N, 1) S{w} -> (N,) strings
    try:
        values = text.astype(np.float64)
    except ValueError:
        for position, item in enumerate(text.tolist()):
            _float_field(item.decode(), source, int(lines[position]), column)
        raise  # unreachable: numpy and float() accept the same strings
    finite = np.isfinite(values)
    if not finite.all():
        position = int(np.argmin(finite))
        raise _column_error(source, int(lines[position]), column, text[position].decode(), "is not finite")
    return values


def _to_int(chars: np.ndarray, source: str, lines: np.ndarray) -> np.ndarray:
    digits = chars - np.uint8(ord("0"))
    if chars.shape[1] <= 9 and len(chars) and np.all((digits < 10) | (chars == 0)) and np.all(chars[:, 0]):
        # Plain unsigned integers, zero-padded on the right: Horner's rule over the columns.
        values = np.zeros(len(chars), dtype=np.int64)
        for j in range(chars.shape[1]):
            present = chars[:, j] != 0
            values[present] = values[present] * 10 + digits[present, j]
        return values
    text = chars.view(f"S{chars.shape[1]}").ravel()  # (N, w) uint8 -> (N, 1) S{w} -> (N,) strings
    try:
        return text.astype(np.int64)
    except (ValueError, OverflowError):
        values = np.empty(len(text), dtype=np.int64)
        for position, item in enumerate(text.tolist()):
            try:
                value = int(item)
            except ValueError:
                line = int(lines[position])
                raise _column_error(source, line, 6, item.decode(), "is not an integer") from None
            values[position] = value if _INT64_MIN < value <= np.iinfo(np.int64).max else _INT64_MIN
        return values


def write_detections_csv(path: str | os.PathLike, table: AvaTable) -> None:
    """Write detections in the AVA CSV layout, floats in shortest round-trip form.

    Reading the file back with :func:`read_detections` gives the same numbers, so scoring the
    file and scoring the table in memory agree exactly.
    """
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        columns = (table.row_key.tolist(), table.boxes.tolist(), table.labels.tolist(), table.scores.tolist())
        for key, box, label, score in zip(*columns, strict=True):
            video_id, second = table.keys[key]
            file.write(f"{video_id},{second},{box[0]!r},{box[1]!r},{box[2]!r},{box[3]!r},{label},{score!r}\n")


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
    """

    mean_ap: float
    per_class: dict[int, float]
    groups: dict[str, float | None]
    class_names: dict[int, str]
    num_groundtruth: dict[int, int]
    num_detections: dict[int, int]
    counts: dict[str, int] = field(default_factory=dict)

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
                "max_detections_per_keyframe": MAX_DETECTIONS_PER_KEYFRAME,
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


def _select_detections(gt: _GroundTruth, det: AvaTable, counts: dict[str, int]) -> tuple[np.ndarray, ...]:
    """Class filter, keyframe filter and cap, in the official order.

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

    # Cap: keep the 50 best per keyframe. Sorting by keyframe then descending score gives the
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
    kept = rank < MAX_DETECTIONS_PER_KEYFRAME
    counts["over_cap_rows"] = int(np.count_nonzero(~kept))
    cap = MAX_DETECTIONS_PER_KEYFRAME
    full = group_start[group_size > cap]
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


def _score(gt: _GroundTruth, det: AvaTable) -> AvaResult:
    counts: dict[str, int] = {"detection_rows": len(det)}
    key, rank, score, class_position, boxes, image_rank, status = _select_detections(gt, det, counts)
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
) -> AvaResult:
    """Score detections against ground truth with the official AVA protocol.

    Args:
        groundtruth: Ground-truth rows (:func:`read_groundtruth`).
        detections: Detection rows (:func:`read_detections`, or :meth:`AvaEvaluator.detections`).
        labelmap: Class id -> name of the evaluated classes (:func:`read_labelmap`).
        exclusions: Keyframe keys to ignore (:func:`read_exclusions`).

    Warns:
        AvaInputWarning: For rows the official scorer silently ignores.

    Raises:
        UserError: If the ground truth has no box of the label map's classes.
    """
    return _score(_prepare_groundtruth(groundtruth, labelmap, exclusions), detections)


def evaluate_ava_files(
    groundtruth: str | os.PathLike,
    detections: str | os.PathLike,
    labelmap: str | os.PathLike,
    exclusions: str | os.PathLike | None = None,
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
    return evaluate_ava(read_groundtruth(groundtruth), read_detections(detections), names, excluded)


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
    ) -> None:
        """Read and prepare the ground truth.

        Args:
            groundtruth: Ground-truth CSV, or a table from :func:`read_groundtruth`.
            labelmap: Label map ``.pbtxt``, or class id -> name.
            exclusions: Excluded-timestamps CSV, or (video id, second) pairs.
            class_ids: Action id of each score column given to :meth:`process`; by default
                column j is class j + 1 (AVA's 80 classes).
        """
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
        return _score(self._groundtruth, self.detections())
