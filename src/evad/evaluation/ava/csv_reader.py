"""Parsing AVA CSVs into an `AvaTable`: a vectorised reader for plain ASCII files, and a row-by-row
one (the csv module) for what it cannot take (quoted fields, non-ASCII text, fields over 64
characters), with the same results and the same one-line errors naming file, line and column.
``python benchmarks/bench_ava_eval.py`` times them.
"""

from __future__ import annotations

import codecs
import csv
import os

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from evad.errors import UserError
from evad.evaluation.ava.table import AvaTable, Key, keyframe_key

_MAX_FIELD = 64  # widest field (and video,second prefix) the vectorised reader handles
_INT64_MIN = np.iinfo(np.int64).min  # stands for action ids that do not fit in int64 (never in a map)
_COLUMNS = ("video_id", "second", "x1", "y1", "x2", "y2", "action_id", "score")


def read_csv(path: str | os.PathLike, allowed: tuple[int, ...]) -> AvaTable:
    """Rows of an AVA CSV with `allowed` column counts (the fast reader, else the csv-module one).

    Raises:
        UserError: Naming the file and 1-based line (and column) of the first malformed row.
    """
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
    if table is not None:
        return table
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{source}:{line}: not UTF-8 text ({err.reason})") from None
    return _parse_slow(source, allowed)


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
    line = end = 0
    try:
        with open(source, encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            for row in reader:
                line, end = end + 1, reader.line_num  # the row's first line (quotes may span lines)
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
    except UnicodeDecodeError as err:  # the file changed since read_csv checked it
        raise UserError(f"{source}: not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise UserError(f"{source}:{end + 1}: {err}") from None
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
