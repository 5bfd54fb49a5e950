"""UCF101-24 / JHMDB frame-mAP and video-mAP: the MOC-detector protocol at tubelet length K = 1.

SPEC section 11 records the rules and section 9 the ground-truth pickle. In short:

- Geometry uses the +1 pixel rule: a box ``(x1, y1, x2, y2)`` covers ``(x2 - x1 + 1) * (y2 - y1 + 1)``
  pixels. The spatio-temporal IoU of two tubes is their temporal IoU (frame ranges, +1) times the
  mean per-frame IoU over the frames they share.
- Every (video, frame, class) group of detections first goes through a score-decay NMS at 0.6.
- Frame-AP at IoU 0.5 ranks a class's detections over every frame of every test video; each takes
  the best remaining ground-truth box of its frame, which it removes on a hit. AP is the trapezoidal
  area under the precision-recall curve from (recall 0, precision 1), without an envelope.
- Tubes are linked per video and class from the top 10 decayed boxes of each frame, ended at their
  first frame without a match, and kept at mean score >= 0.005 and length >= 15. Video-AP ranks
  them after a tube NMS at spatio-temporal IoU 0.3.

Numerics follow the reference so that ties and threshold comparisons fall the same way: detection
boxes and scores are float32 (the reference's detection arrays are), IoUs are computed in the dtype
numpy promotes the operands to, tube scores are float32 means, and precision and recall are stored in
float32 before the area is summed. Equal scores are common (scores saturate at 1, CSVs round them);
the reference orders them with numpy's default sort, which is not stable and whose order for equal
keys depends on the numpy version and the CPU's SIMD sort. Every sort of scores here is that same
default sort applied to an array equal to the reference's (same values, same order), so equal scores
fall as they do for the reference run with the same numpy on the same machine.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import math
import pickle
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evad.errors import UserError

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

FRAME_IOU = 0.5
DECAY_NMS_IOU = 0.6
BOXES_PER_FRAME = 10
LINK_IOU = 0.5
MIN_TUBE_SCORE = 0.005
MIN_TUBE_LENGTH = 15
TUBE_NMS_IOU = 0.3
DEFAULT_VIDEO_THRESHOLDS = ("0.2", "0.5", "0.75", "0.5:0.95")
_RANGE_STEP = 0.05


# ----------------------------------------------------------------------------------------- geometry


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``(..., 4)`` broadcast against each other, with the +1 pixel rule.

    Args:
        a: boxes ``x1, y1, x2, y2`` in pixels.
        b: boxes broadcastable against ``a``.

    Returns:
        The IoUs, in the dtype numpy promotes ``a`` and ``b`` to.
    """
    width = np.maximum(0, np.minimum(a[..., 2] + 1, b[..., 2] + 1) - np.maximum(a[..., 0], b[..., 0]))
    height = np.maximum(0, np.minimum(a[..., 3] + 1, b[..., 3] + 1) - np.maximum(a[..., 1], b[..., 1]))
    inter = width * height
    return inter / (_area(a) + _area(b) - inter)


def _suppression_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`box_iou` in the reference NMS's arithmetic: ``min(x2, x2') - max(x1, x1') + 1`` rather than
    ``min(x2 + 1, x2' + 1) - max(x1, x1')``. The two round differently in float32, and the decayed
    scores, hence their ties and order, must match the reference's to the last bit."""
    width = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    height = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = width * height
    return inter / (_area(a) + _area(b) - inter)


def spatiotemporal_iou(a: np.ndarray, b: np.ndarray) -> float | np.floating:
    """Temporal IoU times the mean per-frame IoU over the common frames (0 if there are none).

    Args:
        a: tube ``(L, 5)`` of rows ``frame, x1, y1, x2, y2`` on consecutive frames.
        b: another tube.

    Returns:
        The spatio-temporal IoU (a numpy scalar in the operands' dtype, or 0.0).
    """
    start, end = max(a[0, 0], b[0, 0]), min(a[-1, 0], b[-1, 0])
    if end < start:
        return 0.0
    temporal = (end - start + 1) / (max(a[-1, 0], b[-1, 0]) - min(a[0, 0], b[0, 0]) + 1)
    # Tubes cover consecutive frames, so a frame's row is its offset from the first frame.
    common_a = a[int(start - a[0, 0]) : int(end - a[0, 0]) + 1, 1:5]
    common_b = b[int(start - b[0, 0]) : int(end - b[0, 0]) + 1, 1:5]
    return np.mean(box_iou(common_a, common_b)) * temporal


# ------------------------------------------------------------------------------------- ground truth


_PICKLE_BUILTINS = {
    "set",
    "frozenset",
    "list",
    "dict",
    "tuple",
    "str",
    "int",
    "float",
    "bool",
    "complex",
    "bytes",
}
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _PICKLE_GLOBALS[(_module, "_reconstruct")] = _multiarray._reconstruct
    _PICKLE_GLOBALS[(_module, "scalar")] = _multiarray.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _PICKLE_GLOBALS[(_module, "_frombuffer")] = _numeric._frombuffer


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy array reconstruction and plain builtin containers; nothing can run code."""

    def find_class(self, module: str, name: str) -> object:
        if module in ("builtins", "__builtin__") and name in _PICKLE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) in _PICKLE_GLOBALS:
            return _PICKLE_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}'")


@dataclass(frozen=True)
class TubeGroundTruth:
    """Ground truth of one split's test videos.

    Attributes:
        labels: class names; a detection's label is an index into them.
        videos: the split's test videos, in the pickle's order.
        nframes: ``(V,)`` number of frames of each test video (frames are numbered from 1).
        tubes: per test video, ``{label: [tube, ...]}`` with tubes ``(L, 5)`` of rows
            ``frame, x1, y1, x2, y2`` (pixels) on consecutive frames.
        split: the split, numbered from 1 (entry ``split - 1`` of the pickle's ``test_videos``).
    """

    labels: tuple[str, ...]
    videos: tuple[str, ...]
    nframes: np.ndarray
    tubes: tuple[dict[int, list[np.ndarray]], ...]
    split: int = 1


def _check_tube(tube: object, where: str) -> np.ndarray:
    if not isinstance(tube, np.ndarray) or tube.ndim != 2 or tube.shape[0] == 0 or tube.shape[1] != 5:
        raise UserError(f"{where}: a tube must be a non-empty (N, 5) array of frame, x1, y1, x2, y2")
    if not np.issubdtype(tube.dtype, np.floating):
        if not np.issubdtype(tube.dtype, np.integer):
            raise UserError(f"{where}: tube of dtype {tube.dtype} is not numeric")
        tube = tube.astype(np.float64)
    if not np.isfinite(tube).all():
        raise UserError(f"{where}: tube has non-finite values")
    if np.any(tube[:, 0] != np.floor(tube[:, 0])) or np.any(np.diff(tube[:, 0]) != 1):
        # The reference's tube IoU assumes it (and fails an assertion otherwise).
        raise UserError(f"{where}: tube frames must be consecutive increasing integers")
    return tube


def load_groundtruth(path: str | Path, split: int = 1) -> TubeGroundTruth:
    """Read a UCF101-24 / JHMDB ground-truth pickle (Python 2 or 3) with a restricted unpickler.

    Args:
        path: the pickle (keys ``labels``, ``gttubes``, ``nframes``, ``test_videos``, ...).
        split: test split numbered from 1, like ``data.split`` and ``evad evaluate tubes --split``
            (1 for UCF101-24; 1, 2 or 3 for JHMDB).

    Returns:
        The test videos of that split with their tubes.

    Raises:
        UserError: unreadable file, a pickle that refers to anything but numpy arrays and builtin
            containers, or content that does not follow SPEC section 9.
    """
    path = Path(path)
    try:
        data = _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except OSError as err:
        raise UserError(f"{path}: cannot read ground truth: {err.strerror or err}") from err
    except Exception as err:  # any malformed pickle: truncated, bad opcode, refused global
        if zipfile.is_zipfile(path):
            raise UserError(f"{path}: a torch.save (zip) file, not a ground-truth pickle") from None
        raise UserError(f"{path}: not a usable ground-truth pickle: {' '.join(str(err).split())}") from None
    required = ("labels", "gttubes", "nframes", "test_videos")
    missing = [k for k in required if not isinstance(data, dict) or k not in data]
    if missing:
        raise UserError(f"{path}: ground-truth pickle lacks {', '.join(missing)}")
    try:
        return _parse_groundtruth(data, path, split)
    except (TypeError, ValueError, AttributeError) as err:  # a field of the wrong kind
        raise UserError(f"{path}: malformed ground truth: {err}") from err


def _parse_groundtruth(data: dict, path: Path, split: int) -> TubeGroundTruth:
    labels = tuple(str(label) for label in data["labels"])
    splits = data["test_videos"]
    if not 1 <= split <= len(splits):
        raise UserError(f"{path}: split {split} does not exist (the pickle has {len(splits)} test splits)")
    videos = tuple(str(v) for v in splits[split - 1])
    nframes = np.zeros(len(videos), dtype=np.int64)
    tubes = []
    for iv, video in enumerate(videos):
        if video not in data["nframes"] or video not in data["gttubes"]:
            raise UserError(f"{path}: test video {video!r} has no nframes or gttubes entry")
        nframes[iv] = int(data["nframes"][video])
        video_tubes: dict[int, list[np.ndarray]] = {}
        for label, label_tubes in data["gttubes"][video].items():
            where = f"{path}: video {video!r}, label {label!r}"
            if not isinstance(label, (int, np.integer)) or not 0 <= label < len(labels):
                raise UserError(f"{where}: label is not an index into the {len(labels)} labels")
            video_tubes[int(label)] = [
                _check_tube(t, f"{where}, tube {i}") for i, t in enumerate(label_tubes)
            ]
        tubes.append(video_tubes)
    return TubeGroundTruth(labels, videos, nframes, tuple(tubes), split)


# --------------------------------------------------------------------------------------- detections


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
    return FrameDetections(
        video,
        frame.astype(np.int64),
        label.astype(np.int64),
        boxes.astype(np.float32),
        score.astype(np.float32),
        str(path),
    )


# ------------------------------------------------------------------------------- decay NMS and AP


def _reference_order(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rows by group, and within a group as the reference's ``argsort(scores)[::-1]`` orders it.

    That is descending score; the reference's sort runs on the group's rows in input order, so for
    a group with equal scores the same sort is run on the same array here.
    """
    order = np.lexsort((-scores, groups))
    sorted_groups, sorted_scores = groups[order], scores[order]
    tied = np.flatnonzero(
        (sorted_groups[1:] == sorted_groups[:-1]) & (sorted_scores[1:] == sorted_scores[:-1])
    )
    if tied.size:
        starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for g in np.unique(np.searchsorted(starts, tied, side="right") - 1):
            rows = np.sort(order[starts[g] : ends[g]])  # the group in input order
            order[starts[g] : ends[g]] = rows[np.argsort(scores[rows])[::-1]]
    return order


def _group_starts(sorted_groups: np.ndarray) -> np.ndarray:
    if len(sorted_groups) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])


def decay_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float = DECAY_NMS_IOU
) -> np.ndarray:
    """Score-decay NMS within each group of boxes (one group = one video, frame and class).

    A group's boxes are visited by descending score (equal scores in the order of the reference's
    ``argsort(scores)[::-1]`` over the group in input order). Each box not yet visited whose IoU
    with the visited one exceeds ``threshold`` has its score multiplied by ``1 - IoU`` and is never
    visited. No box is removed.

    Args:
        boxes: ``(N, 4)`` boxes, float32.
        scores: ``(N,)`` scores, float32.
        groups: ``(N,)`` integer group of each box; rows of a group in file order.
        threshold: IoU above which a box is decayed.

    Returns:
        ``(N,)`` decayed scores, in the dtype of ``scores``.
    """
    n = len(scores)
    decayed = scores.copy()
    order = _reference_order(groups, scores)
    starts = _group_starts(groups[order])
    sizes = np.diff(np.r_[starts, n])
    # Groups of equal size are processed together: one step of the visit at a time for all of them.
    for size in np.unique(sizes[sizes > 1]):
        first = starts[sizes == size]
        chunk = max(1, 2**22 // int(size) ** 2)
        for c in range(0, len(first), chunk):
            rows = order[first[c : c + chunk, None] + np.arange(size)]  # (G, m), in visiting order
            # (G, m, 4) -> (G, m, m)
            pair_iou = _suppression_iou(boxes[rows][:, :, None], boxes[rows][:, None])
            weight = np.ones(rows.shape, dtype=scores.dtype)
            pending = np.ones(rows.shape, dtype=bool)  # neither visited nor decayed yet
            for r in range(size - 1):
                iou_r = pair_iou[:, r, r + 1 :]
                hit = pending[:, r, None] & pending[:, r + 1 :] & (iou_r > threshold)
                weight[:, r + 1 :][hit] = (1 - iou_r)[hit]
                pending[:, r + 1 :] &= ~hit
            decayed[rows] = scores[rows] * weight
    return decayed


def average_precision(is_tp: np.ndarray, num_positives: int) -> float:
    """Trapezoidal area under the precision-recall curve that starts at (recall 0, precision 1).

    Args:
        is_tp: ``(N,)`` whether each detection, in rank order, is a true positive.
        num_positives: number of ground-truth instances; 0 gives AP 0.

    Returns:
        The AP. Precision and recall are rounded to float32 and summed in float32, as the reference
        stores them.
    """
    if num_positives == 0:
        return 0.0
    tp = np.cumsum(is_tp)
    precision = np.ones(len(is_tp) + 1, dtype=np.float32)
    recall = np.zeros(len(is_tp) + 1, dtype=np.float32)
    precision[1:] = tp / np.arange(1, len(is_tp) + 1)
    recall[1:] = tp / num_positives
    return float(np.sum((recall[1:] - recall[:-1]) * (precision[1:] + precision[:-1]) * 0.5))


# --------------------------------------------------------------------------------------- frame-AP


def _match_frames(
    det_keys: np.ndarray, det_boxes: np.ndarray, gt_keys: np.ndarray, gt_boxes: np.ndarray, threshold: float
) -> np.ndarray:
    """True positives among ranked detections; each removes the best remaining box of its frame on a hit."""
    lo = np.searchsorted(gt_keys, det_keys, side="left")
    count = np.searchsorted(gt_keys, det_keys, side="right") - lo
    is_tp = np.zeros(len(det_keys), dtype=bool)
    # A frame with one box: the first detection (in rank order) that reaches the threshold takes it.
    single = np.flatnonzero(count == 1)
    hits = single[box_iou(gt_boxes[lo[single]], det_boxes[single]) >= threshold]
    _, first = np.unique(det_keys[hits], return_index=True)
    is_tp[hits[first]] = True
    # Frames with several boxes: the greedy matching, frame by frame.
    multi = np.flatnonzero(count > 1)
    multi = multi[np.argsort(det_keys[multi], kind="stable")]  # grouped by frame, rank order kept
    for group in np.split(multi, np.flatnonzero(np.diff(det_keys[multi])) + 1) if multi.size else ():
        boxes = gt_boxes[lo[group[0]] : lo[group[0]] + count[group[0]]]
        ious = box_iou(boxes[None], det_boxes[group, None])  # (n, m)
        free = np.ones(len(boxes), dtype=bool)
        for i, row in zip(group, ious, strict=True):
            j = int(np.argmax(np.where(free, row, -np.inf)))
            if free[j] and row[j] >= threshold:
                is_tp[i], free[j] = True, False
    return is_tp


def frame_average_precision(
    groundtruth: TubeGroundTruth,
    detections: FrameDetections,
    scores: np.ndarray,
    threshold: float = FRAME_IOU,
    frames: np.ndarray | None = None,
) -> np.ndarray:
    """Frame-AP of every class over every frame of every test video.

    Args:
        groundtruth: the test split.
        detections: the detections.
        scores: ``(N,)`` their scores after ``decay_nms``.
        threshold: IoU for a hit.
        frames: ``(F, 2)`` (video index, frame) pairs that were scored, e.g. every n-th frame;
            ground truth on other frames is left out. None scores every frame (the protocol).

    Returns:
        ``(C,)`` AP per class; 0 for a class without ground truth.
    """
    stride = int(groundtruth.nframes.max(initial=0)) + 1
    keys, labels, boxes = [], [], []
    for v, video_tubes in enumerate(groundtruth.tubes):
        for label, tubes in video_tubes.items():
            for tube in tubes:
                tube_frames = tube[:, 0].astype(np.int64)
                # Frames outside the video can never be hit.
                inside = (tube_frames >= 1) & (tube_frames <= groundtruth.nframes[v])
                keys.append(np.where(inside, v * stride + tube_frames, -1))
                labels.append(np.full(len(tube), label))
                boxes.append(tube[:, 1:5].astype(np.float64))
    gt_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    gt_labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    gt_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    if frames is not None:
        scored = np.isin(gt_keys, frames[:, 0].astype(np.int64) * stride + frames[:, 1].astype(np.int64))
        gt_keys, gt_labels, gt_boxes = gt_keys[scored], gt_labels[scored], gt_boxes[scored]
    gt_order = np.lexsort((gt_keys, gt_labels))  # by class, then frame; tube order kept within a frame
    gt_keys, gt_labels, gt_boxes = gt_keys[gt_order], gt_labels[gt_order], gt_boxes[gt_order]

    det_keys = detections.video * stride + detections.frame
    base = np.lexsort((detections.frame, detections.video))  # the reference's order: video, frame, file
    aps = np.zeros(len(groundtruth.labels))
    for c in range(len(aps)):
        rows = base[detections.label[base] == c]
        rows = rows[np.argsort(-scores[rows])]
        lo, hi = np.searchsorted(gt_labels, [c, c + 1])
        is_tp = _match_frames(
            det_keys[rows], detections.boxes[rows], gt_keys[lo:hi], gt_boxes[lo:hi], threshold
        )
        aps[c] = average_precision(is_tp, int(hi - lo))
    return aps


# ------------------------------------------------------------------------------------------- tubes


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
    order = _reference_order(key, scores)
    starts = _group_starts(key[order])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    order = order[rank < BOXES_PER_FRAME]  # per frame, the best 10 in descending score
    key, boxes, scores = key[order], boxes[order], scores[order]
    starts = _group_starts(key)
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


# ------------------------------------------------------------------------------------------ report


def parse_iou_thresholds(texts: Sequence[str | float]) -> list[tuple[str, list[float]]]:
    """Parse video-AP thresholds: ``0.5`` / ``"0.5"`` or a range ``"0.5:0.95"`` (step 0.05, averaged).

    Args:
        texts: thresholds, as numbers or texts.

    Returns:
        ``(name, thresholds)`` per text, names normalised (``"0.50"`` -> ``"0.5"``).

    Raises:
        UserError: a text that is not a threshold in (0, 1] or a range of them in steps of 0.05.
    """
    parsed = []
    for text in texts:
        text = str(text)
        try:
            bounds = [float(part) for part in text.split(":")]
        except ValueError:
            raise UserError(f"IoU threshold {text!r} is not a number or a range like 0.5:0.95") from None
        if len(bounds) > 2 or not all(0 < x <= 1 for x in bounds):  # nan and inf too
            raise UserError(f"IoU threshold {text!r}: expected a value in (0, 1] or a range lo:hi, step 0.05")
        steps = round((bounds[-1] - bounds[0]) / _RANGE_STEP)
        if steps < 0 or not math.isclose(bounds[0] + steps * _RANGE_STEP, bounds[-1], abs_tol=1e-9):
            raise UserError(f"IoU threshold {text!r}: expected a value in (0, 1] or a range lo:hi, step 0.05")
        name = ":".join(f"{x:g}" for x in bounds)
        parsed.append((name, [bounds[0] + _RANGE_STEP * i for i in range(steps + 1)]))
    return parsed


@dataclass(frozen=True)
class TubeMetrics:
    """Frame- and video-AP per class.

    Attributes:
        labels: class names.
        frame_ap: ``(C,)`` frame-AP at IoU 0.5.
        video_ap: threshold name (``"0.5"``, ``"0.5:0.95"``) -> ``(C,)`` video-AP.
        warnings: what the user should know (no detections, boxes that look normalised, classes
            without test ground truth).
    """

    labels: tuple[str, ...]
    frame_ap: np.ndarray
    video_ap: dict[str, np.ndarray]
    warnings: tuple[str, ...] = ()

    @property
    def frame_map(self) -> float:
        """Mean frame-AP over all classes."""
        return float(np.mean(self.frame_ap))

    @property
    def video_map(self) -> dict[str, float]:
        """Mean video-AP over all classes, per threshold name."""
        return {name: float(np.mean(ap)) for name, ap in self.video_ap.items()}

    def to_dict(self) -> dict:
        """The JSON report: ``frame_mAP``, ``video_mAP`` and ``per_class``, fractions in [0, 1]."""
        return {
            "frame_mAP": self.frame_map,
            "video_mAP": self.video_map,
            "per_class": {
                label: {
                    "frame_AP": float(self.frame_ap[c]),
                    "video_AP": {name: float(ap[c]) for name, ap in self.video_ap.items()},
                }
                for c, label in enumerate(self.labels)
            },
        }


def _check_detections(groundtruth: TubeGroundTruth, detections: FrameDetections) -> None:
    n = len(detections.scores)
    if not (
        detections.video.shape == detections.frame.shape == detections.label.shape == (n,)
        and detections.boxes.shape == (n, 4)
    ):
        raise ValueError("FrameDetections arrays disagree in length")
    if n and not (
        np.all((detections.video >= 0) & (detections.video < len(groundtruth.videos)))
        and np.all((detections.label >= 0) & (detections.label < len(groundtruth.labels)))
        and np.all((detections.frame >= 1) & (detections.frame <= groundtruth.nframes[detections.video]))
    ):
        raise ValueError("FrameDetections has a video, label or frame outside the ground truth")


def _input_warnings(groundtruth: TubeGroundTruth, detections: FrameDetections) -> list[str]:
    """No detections, or boxes that look normalised to [0, 1] against ground truth in pixels."""
    if len(detections.scores) == 0:
        return [f"{detections.source}: no detections; every class scores AP 0"]
    gt_extent = max(
        (
            float(tube[:, 1:5].max())
            for video_tubes in groundtruth.tubes
            for tubes in video_tubes.values()
            for tube in tubes
        ),
        default=0.0,
    )
    if detections.boxes.min() >= 0 and detections.boxes.max() <= 1 and gt_extent > 2:
        return [
            f"{detections.source}: every box lies inside [0, 1] x [0, 1] but the ground truth is in pixels; "
            "these boxes look normalised, and tube detections must be in pixels"
        ]
    return []


def evaluate_tubes(
    groundtruth: TubeGroundTruth,
    detections: FrameDetections,
    iou_thresholds: Sequence[str | float] = DEFAULT_VIDEO_THRESHOLDS,
    frames: np.ndarray | None = None,
) -> TubeMetrics:
    """Frame-mAP at IoU 0.5 and video-mAP at the given thresholds (SPEC section 11).

    Example::

        gt = load_groundtruth("UCF101v2-GT.pkl")
        metrics = evaluate_tubes(gt, read_detections("detections.csv", gt))
        print(metrics.frame_map, metrics.video_map["0.5"])

    Args:
        groundtruth: ``load_groundtruth`` output.
        detections: ``read_detections`` output (or built in memory, frames from 1).
        iou_thresholds: video-AP thresholds, as ``parse_iou_thresholds`` reads them.
        frames: ``(F, 2)`` (video index, frame) pairs that were scored when not every frame was
            (e.g. every n-th test frame): frame-AP counts only their ground truth, and video-AP,
            which needs every frame, is left out (``video_ap`` is empty).

    Returns:
        The metrics. A class with detections but no test ground truth gets AP 0 (the reference
        divides 0 by 0) and a warning; every class counts in the means. No detections at all, or
        boxes that all fit in [0, 1] x [0, 1] against ground truth in pixels, also warn.
    """
    named = parse_iou_thresholds(iou_thresholds)
    _check_detections(groundtruth, detections)
    stride = int(groundtruth.nframes.max(initial=0)) + 1
    groups = (detections.video * stride + detections.frame) * len(groundtruth.labels) + detections.label
    scores = decay_nms(detections.boxes, detections.scores, groups)

    frame_ap = frame_average_precision(groundtruth, detections, scores, frames=frames)
    video_ap: dict[str, np.ndarray] = {}
    if frames is None:  # video-AP links detections frame to frame: it needs every frame
        flat = sorted({t for _, values in named for t in values})
        tubes = build_tubes(groundtruth, detections, scores)
        aps = video_average_precision(groundtruth, tubes, flat)
        video_ap = {name: np.mean([aps[flat.index(t)] for t in vals], axis=0) for name, vals in named}

    has_gt = np.zeros(len(groundtruth.labels), dtype=bool)
    for video_tubes in groundtruth.tubes:
        has_gt[[label for label, tubes in video_tubes.items() if tubes]] = True
    has_det = np.bincount(detections.label, minlength=len(has_gt)) > 0
    warnings = tuple(_input_warnings(groundtruth, detections)) + tuple(
        f"class {groundtruth.labels[c]!r} has detections but no ground truth in test split "
        f"{groundtruth.split}; its AP is 0 (the reference divides 0 by 0) and counts in the means"
        for c in np.flatnonzero(has_det & ~has_gt)
    )
    return TubeMetrics(groundtruth.labels, frame_ap, video_ap, warnings)
