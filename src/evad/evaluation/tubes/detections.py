"""Per-frame tube detections: the container and the ``evad evaluate tubes`` CSV reader."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evad.errors import UserError
from evad.evaluation.tubes.groundtruth import TubeGroundTruth


@dataclass(frozen=True)
class FrameDetections:
    """Per-frame detections, one row per box and class.

    Attributes:
        video: ``(N,)`` index into ``TubeGroundTruth.videos``.
        frame: ``(N,)`` frame number, from 1.
        label: ``(N,)`` index into ``TubeGroundTruth.labels``.
        boxes: ``(N, 4)`` float32 ``x1, y1, x2, y2`` in pixels.
        scores: ``(N,)`` float32.
        source: file name (or a description) used in warnings.
    """

    video: np.ndarray
    frame: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    source: str = "in-memory detections"


_COLUMNS = ("video", "frame", "x1", "y1", "x2", "y2", "label", "score")


def _numbers(values: Sequence[str], lines: np.ndarray, column: str, where: Path) -> np.ndarray:
    try:
        numbers = np.array(values, dtype=np.float64)
    except ValueError:  # find the offending row
        numbers = np.empty(len(values))
        for i, value in enumerate(values):
            try:
                numbers[i] = float(value)
            except ValueError:
                raise UserError(f"{where}: line {lines[i]}: {column} {value!r} is not a number") from None
    bad = np.flatnonzero(~np.isfinite(numbers))
    if bad.size:
        raise UserError(f"{where}: line {lines[bad[0]]}: {column} {values[bad[0]]!r} is not finite")
    return numbers


def _check(bad: np.ndarray, lines: np.ndarray, where: Path, message: Callable[[int], str]) -> None:
    """Raise a UserError naming the line of the first row where ``bad`` is true."""
    rows = np.flatnonzero(bad)
    if rows.size:
        raise UserError(f"{where}: line {lines[rows[0]]}: {message(int(rows[0]))}")


def _split_rows(text: str, where: Path) -> tuple[list[Sequence[str]], np.ndarray]:
    """The non-blank rows of a CSV text as columns of fields, and the rows' 1-based line numbers."""
    width = len(_COLUMNS)
    if '"' in text:  # quoted fields: the csv module
        rows, line_numbers = [], []
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            for row in reader:
                if row and (len(row) > 1 or row[0].strip()):
                    rows.append(row)
                    line_numbers.append(reader.line_num)
        except csv.Error as err:
            raise UserError(f"{where}: line {reader.line_num}: {err}") from err
        lines = np.asarray(line_numbers, dtype=np.int64)
        widths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    else:  # the same rows, split at C speed
        physical = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        keep = np.fromiter(map(bool, map(str.strip, physical)), dtype=bool, count=len(physical))
        lines = np.flatnonzero(keep) + 1
        rows = list(itertools.compress(physical, keep))
        widths = np.fromiter(map(str.count, rows, itertools.repeat(",")), dtype=np.int64, count=len(rows)) + 1
    expected = f"expected {width} fields ({', '.join(_COLUMNS)})"
    _check(widths != width, lines, where, lambda i: f"{expected}, got {widths[i]}")
    if not rows:
        return [[] for _ in range(width)], lines
    if isinstance(rows[0], list):
        return [list(column) for column in zip(*rows, strict=True)], lines
    fields = ",".join(rows).split(",")
    return [fields[k::width] for k in range(width)], lines


def read_detections(path: str | Path, groundtruth: TubeGroundTruth) -> FrameDetections:
    """Read a detections CSV: ``video, frame, x1, y1, x2, y2, label, score`` per row, no header.

    Frames are numbered from 1, boxes are in pixels, labels are 0-based indices into the ground
    truth's ``labels``. Blank lines are skipped.

    Args:
        path: the CSV file.
        groundtruth: the ground truth the detections are scored against.

    Returns:
        The detections, in file order.

    Raises:
        UserError: naming the file and 1-based line of the first malformed row, label out of range,
            video outside the test split, frame outside ``1..nframes`` or box with ``x2 < x1``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read detections: {err.strerror or err}") from err
    try:
        text = data.decode("utf-8-sig")  # a BOM, as spreadsheet programs save UTF-8 CSVs, is dropped
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text") from None
    columns, lines = _split_rows(text, path)
    index = {name: i for i, name in enumerate(groundtruth.videos)}
    video = np.fromiter(map(index.get, columns[0], itertools.repeat(-1)), dtype=np.int64, count=len(lines))
    split = groundtruth.split
    _check(video < 0, lines, path, lambda i: f"video {columns[0][i]!r} is not a test video of split {split}")
    numbers = {name: _numbers(columns[i], lines, name, path) for i, name in enumerate(_COLUMNS) if i > 0}
    frame, label, score = numbers["frame"], numbers["label"], numbers["score"]
    _check(frame != np.floor(frame), lines, path, lambda i: f"frame {columns[1][i]!r} is not an integer")
    _check(label != np.floor(label), lines, path, lambda i: f"label {columns[6][i]!r} is not an integer")
    num_labels = len(groundtruth.labels)
    _check(
        (label < 0) | (label >= num_labels),
        lines,
        path,
        lambda i: f"label {columns[6][i]!r} is not an index into the {num_labels} ground-truth labels",
    )
    nframes = groundtruth.nframes[video]
    _check(
        (frame < 1) | (frame > nframes),
        lines,
        path,
        lambda i: f"frame {columns[1][i]!r} is outside 1..{nframes[i]} of video {columns[0][i]!r}",
    )
    boxes = np.stack([numbers[k] for k in ("x1", "y1", "x2", "y2")], axis=1)
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    _check(inverted, lines, path, lambda i: "box has x2 < x1 or y2 < y1")
    with np.errstate(over="ignore"):  # boxes and scores are kept as float32
        too_large = ~np.isfinite(boxes.astype(np.float32)).all(axis=1) | ~np.isfinite(
            score.astype(np.float32)
        )
    _check(too_large, lines, path, lambda i: "a box coordinate or the score is too large for float32")
    return FrameDetections(
        video,
        frame.astype(np.int64),
        label.astype(np.int64),
        boxes.astype(np.float32),
        score.astype(np.float32),
        str(path),
    )
