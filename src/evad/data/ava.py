"""AVA-format keyframe dataset: CSV boxes with multi-hot actions around 1-second keyframes (SPEC 1, 9).

Annotation rows are `video_id, second, x1, y1, x2, y2, action_id[, person_id]` with boxes as
fractions of the frame size; rows of one box (same video, second, box and person id) merge into
one multi-hot label. Keyframe second s is the 0-based frame index (s - timestamp_start) * fps, i.e.
frame file number that + 1, and its clip takes frames at offsets (i - T // 2) * sampling_rate,
clamped to the video.

Everything that can be wrong with the input (files, rows, boxes, class ids, frames) is reported as
a UserError naming the file (and line) when the dataset is built, not inside a DataLoader worker.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evad.data.dataset import ClipDataset, KeyframeTargets
from evad.data.frames import FrameSource
from evad.data.transforms import ClipTransform
from evad.errors import UserError
from evad.evaluation.ava import AvaTable, read_exclusions, read_groundtruth, read_labelmap


class AvaDataset(ClipDataset):
    """Clips around the keyframes of an AVA annotation CSV.

    Attributes:
        groundtruth_csv, labelmap_path, exclusions_csv: Absolute paths of the inputs (exclusions
            may be None), for building an `AvaEvaluator` of the same data.
        eval_labelmap_path: The label map whose classes are scored (default: `labelmap_path`).
        class_ids: AVA action id of each label column (sorted).
        keyframes: (video, second) of each item.

    Args:
        annotations: Annotation CSV.
        labelmap: Label map .pbtxt; every action id of the CSV must be in it.
        source: Frame folders or video files.
        transform: Resize / flip / normalisation.
        split: "train" drops keyframes without boxes of the kept classes; "val" keeps every
            keyframe of the CSV (the evaluator scores against it).
        exclusions: Optional excluded-timestamps CSV; excluded keyframes are not used.
        classes: Keep only these action ids (label columns, boxes); None keeps the label map's.
        eval_labelmap: Label map of the classes to score, if not all of `labelmap`'s.
        fps: Frame rate of the frames.
        timestamp_start: Second of frame 1 (900 for the 15-minute AVA cut).
        num_frames, sampling_rate: Clip length and stride.
    """

    def __init__(
        self,
        annotations: str | os.PathLike,
        labelmap: str | os.PathLike,
        source: FrameSource,
        transform: ClipTransform,
        *,
        split: str = "train",
        exclusions: str | os.PathLike | None = None,
        classes: Sequence[int] | None = None,
        eval_labelmap: str | os.PathLike | None = None,
        fps: float = 30.0,
        timestamp_start: int = 900,
        num_frames: int = 16,
        sampling_rate: int = 4,
    ) -> None:
        self.groundtruth_csv = Path(annotations).absolute()
        self.labelmap_path = Path(labelmap).absolute()
        self.exclusions_csv = None if exclusions is None else Path(exclusions).absolute()
        scored = labelmap if eval_labelmap is None else eval_labelmap
        self.eval_labelmap_path = Path(scored).absolute()
        names = read_labelmap(labelmap)
        if classes is None:
            class_ids = sorted(names)
        else:
            unknown = sorted(set(classes) - set(names))
            if unknown:
                raise UserError(f"data.classes: ids {unknown} are not in the label map {labelmap}")
            class_ids = sorted(set(classes))
        table = read_groundtruth(annotations)
        if not table.keys:
            raise UserError(f"{annotations}: the annotation file is empty")
        _check_rows(table, names, labelmap)
        excluded = read_exclusions(exclusions) if exclusions is not None else set()
        targets = _targets(
            table, class_ids, excluded, keep_empty=split != "train", fps=fps, start=timestamp_start
        )
        if not len(targets.frame):
            raise UserError(
                f"{annotations}: no keyframes with boxes of the classes {class_ids} outside the exclusions"
            )
        if split != "train":  # what the evaluation will find, found before any training
            scored_names = read_labelmap(scored)
            scored_ids = [c for c in class_ids if c in scored_names]
            if not scored_ids:
                raise UserError(f"{scored}: names none of the trained classes {class_ids}: nothing to score")
            if not targets.labels[:, [class_ids.index(c) for c in scored_ids]].any():
                raise UserError(
                    f"{annotations}: no boxes of the scored classes {scored_ids} outside the exclusions: "
                    "nothing to score"
                )
        super().__init__(
            targets,
            source,
            transform,
            split=split,
            class_ids=class_ids,
            class_names=[names[c] for c in class_ids],
            num_frames=num_frames,
            sampling_rate=sampling_rate,
            normalized_boxes=True,
        )


def _check_rows(table: AvaTable, names: dict[int, str], labelmap: str | os.PathLike) -> None:
    """Class ids in the label map, boxes inside [0, 1] and not inverted; errors name file and line."""
    boxes = table.boxes

    def fail(bad: np.ndarray, problem: str) -> None:
        if bad.any():
            row = int(np.argmax(bad))
            line = int(table.lines[row]) if table.lines is not None else "?"
            box = ", ".join(f"{v:g}" for v in boxes[row])
            raise UserError(f"{table.source}:{line}: {problem.replace('BOX', box)}")

    unknown = ~np.isin(table.labels, list(names))
    if unknown.any():
        fail(unknown, f"action id {int(table.labels[np.argmax(unknown)])} is not in the label map {labelmap}")
    fail(((boxes < 0) | (boxes > 1)).any(axis=1), "box (BOX) is outside [0, 1] (fractions of the frame size)")
    fail((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]), "box (BOX) has x2 < x1 or y2 < y1")


def _targets(
    table: AvaTable,
    class_ids: list[int],
    excluded: set[tuple[str, str]],
    *,
    keep_empty: bool,
    fps: float,
    start: int,
) -> KeyframeTargets:
    """Merge rows into multi-hot boxes per keyframe; drop excluded keyframes and other classes."""
    # A box is (keyframe, x1, y1, x2, y2): rows sharing a box merge whatever their person id
    # (SPEC section 9, and the official loader keys on the box alone).
    rows = np.column_stack([table.row_key, table.boxes])  # (R, 5)
    _, first, box_of_row = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    box_of_row = box_of_row.reshape(-1)  # (R,), or (R, 1) on NumPy 2.0.0 -> (R,)
    by_appearance = np.argsort(first, kind="stable")  # box numbers in order of first appearance
    renumber = np.empty_like(by_appearance)
    renumber[by_appearance] = np.arange(len(first))
    box_of_row, first = renumber[box_of_row], first[by_appearance]

    ids = np.asarray(class_ids, dtype=np.int64)  # sorted
    position = np.minimum(np.searchsorted(ids, table.labels), len(ids) - 1)
    label_column = np.where(ids[position] == table.labels, position, -1)
    labels = np.zeros((len(first), len(class_ids)), dtype=bool)
    kept = label_column >= 0
    labels[box_of_row[kept], label_column[kept]] = True

    # Keyframes: every key of the CSV (2-column rows included) not excluded, in file order.
    key_kept = np.asarray([key not in excluded for key in table.keys], dtype=bool)
    box_key = table.row_key[first]
    has_box = labels.any(axis=1) & key_kept[box_key]
    if not keep_empty:
        key_kept &= np.bincount(box_key[has_box], minlength=len(table.keys)) > 0
    keys = np.flatnonzero(key_kept)
    key_number = np.full(len(table.keys), -1, dtype=np.int64)
    key_number[keys] = np.arange(len(keys))

    boxes = np.flatnonzero(has_box)
    order, box_start = KeyframeTargets.group_boxes(key_number[box_key[boxes]], len(keys))
    boxes = boxes[order]

    def where(key: int) -> str:
        """FILE:LINE of the first row of keyframe `key`."""
        rows = np.flatnonzero(table.row_key == key)
        return (
            f"{table.source}:{table.lines[rows[0]]}"
            if table.lines is not None and rows.size
            else table.source
        )

    videos: dict[str, int] = {}
    video_index, seconds = [], []
    for k in keys.tolist():
        video, second = table.keys[k]
        value = float(second)
        if value != int(value):
            raise UserError(f"{where(k)}: keyframe ({video}, {value:g}) is not at a whole second")
        video_index.append(videos.setdefault(video, len(videos)))
        seconds.append(int(value))
    seconds_array = np.asarray(seconds, dtype=np.int64)
    frame = np.rint((seconds_array - start) * fps).astype(np.int64) + 1
    if len(frame) and frame.min() < 1:
        k = int(np.argmin(frame))
        raise UserError(
            f"{where(int(keys[k]))}: keyframe ({table.keys[keys[k]][0]}, {seconds[k]}) lies before the first "
            f"frame (second {start} at {fps:g} fps is frame 1; check data.timestamp_start)"
        )
    return KeyframeTargets(
        videos=list(videos),
        video_index=np.asarray(video_index, dtype=np.int64),
        frame=frame,
        timestamp=seconds_array,
        box_start=box_start,
        boxes=table.boxes[first[boxes]].astype(np.float32),
        labels=labels[boxes],
    )
