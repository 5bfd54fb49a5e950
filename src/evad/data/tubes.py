"""UCF101-24 / JHMDB keyframe dataset from the standard ground-truth pickle (SPEC sections 9, 11).

The pickle holds dense tubes `gttubes[video][label] = [(N, 5) frame, x1, y1, x2, y2]` in pixels,
frames numbered from 1. Training keyframes are the annotated frames of the split's training
videos (every `stride`-th); evaluation keyframes are every frame 1..nframes of its test videos
(every `stride`-th), frames without ground truth included, since frame-mAP scores detections
on every frame. At a frame, each tube covering it contributes its box with its one label.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evad.data.dataset import ClipDataset, KeyframeTargets
from evad.data.frames import FrameSource
from evad.data.transforms import ClipTransform
from evad.errors import UserError, outside_stacklevel

# The evaluation module's pickle reader (restricted unpickler, tube checks) also reads the training
# videos, which `load_groundtruth` leaves out.
from evad.evaluation.tubes.groundtruth import (
    TubeGroundTruth,
    check_tube,
    frame_count,
    load_groundtruth,
    read_pickle,
    split_videos,
)


class TubeDataset(ClipDataset):
    """Clips around the frames of UCF101-24 / JHMDB videos.

    Attributes:
        groundtruth_path: Absolute path of the pickle.
        groundtruth: The test split's ground truth (`load_groundtruth`), for building the
            frame-/video-mAP evaluation of the same data, whichever split this dataset is.
        class_ids: 1-based label of each label column (pickle label index + 1).
        keyframes: (video, frame number) of each item.

    Args:
        groundtruth: Ground-truth pickle.
        source: Frame folders (frames numbered from 1) or video files.
        transform: Resize / flip / normalisation.
        split: "train" (annotated frames of the training videos) or "val" (every frame of the test
            videos).
        split_index: 0-based index into the pickle's `train_videos` / `test_videos` (JHMDB has 3).
        classes: Keep only these 1-based labels; None keeps all.
        stride: Use every `stride`-th keyframe of each video.
        num_frames, sampling_rate: Clip length and stride.
    """

    def __init__(
        self,
        groundtruth: str | os.PathLike,
        source: FrameSource,
        transform: ClipTransform,
        *,
        split: str = "train",
        split_index: int = 0,
        classes: Sequence[int] | None = None,
        stride: int = 1,
        num_frames: int = 16,
        sampling_rate: int = 4,
    ) -> None:
        if stride < 1:
            raise UserError(f"the keyframe stride must be at least 1, got {stride}")
        self.stride = stride
        self.groundtruth_path = Path(groundtruth).absolute()
        self.groundtruth: TubeGroundTruth = load_groundtruth(groundtruth, split_index + 1)
        labels = self.groundtruth.labels
        if classes is None:
            class_ids = list(range(1, len(labels) + 1))
        else:
            unknown = sorted(c for c in set(classes) if not 1 <= c <= len(labels))
            if unknown:
                raise UserError(
                    f"data.classes: labels {unknown} are not in {groundtruth} (1-based, {len(labels)} labels)"
                )
            class_ids = sorted(set(classes))
        if split == "train":
            videos, nframes, tubes = _training_videos(self.groundtruth_path, split_index, len(labels))
        else:
            gt = self.groundtruth
            videos, nframes, tubes = list(gt.videos), gt.nframes.tolist(), list(gt.tubes)
        targets = _targets(videos, nframes, tubes, class_ids, annotated_only=split == "train", stride=stride)
        if not len(targets.frame):
            raise UserError(f"{groundtruth}: no {split} keyframes with boxes of the labels {class_ids}")
        super().__init__(
            targets,
            source,
            transform,
            split=split,
            class_ids=class_ids,
            class_names=[labels[c - 1] for c in class_ids],
            num_frames=num_frames,
            sampling_rate=sampling_rate,
        )


def _training_videos(
    path: Path, split_index: int, num_labels: int
) -> tuple[list[str], list[int], list[dict[int, list[np.ndarray]]]]:
    """Training videos of a split with their frame counts and checked tubes."""
    data = read_pickle(path)
    splits = data.get("train_videos")
    if not isinstance(splits, list | tuple) or not splits:
        raise UserError(f"{path}: ground-truth pickle lacks train_videos")
    if not 0 <= split_index < len(splits):
        raise UserError(f"{path}: split {split_index + 1} does not exist (the pickle has {len(splits)})")
    videos = split_videos(splits, split_index + 1, path, "train_videos")
    resolution = data.get("resolution")
    nframes, tubes = [], []
    outside = 0  # annotated frames past the video's ends
    for video in videos:
        count = frame_count(data, video, path, "training")
        nframes.append(count)
        size = resolution.get(video) if isinstance(resolution, dict) else None
        video_tubes: dict[int, list[np.ndarray]] = {}
        for label, label_tubes in data["gttubes"][video].items():
            where = f"{path}: video {video!r}, label {label!r}"
            if not isinstance(label, int | np.integer) or not 0 <= label < num_labels:
                raise UserError(f"{where}: label is not an index into the {num_labels} labels")
            checked = []
            for i, tube in enumerate(label_tubes):
                tube = _training_tube(check_tube(tube, f"{where}, tube {i}"), f"{where}, tube {i}", size)
                inside = (tube[:, 0] >= 1) & (tube[:, 0] <= count)
                outside += int((~inside).sum())
                if inside.any():
                    checked.append(tube[inside])
            video_tubes[int(label)] = checked
        tubes.append(video_tubes)
    if outside:
        warnings.warn(
            f"{path}: {outside} annotated frames of training tubes lie outside their video's frames "
            "1..nframes; skipped",
            UserWarning,
            stacklevel=outside_stacklevel(),
        )
    return videos, nframes, tubes


def _training_tube(tube: np.ndarray, where: str, size: object) -> np.ndarray:
    """A tube's boxes checked for order and clipped to the frame when the pickle gives its
    (height, width) in ``resolution``, as the official loaders clip ground truth."""
    inverted = (tube[:, 3] < tube[:, 1]) | (tube[:, 4] < tube[:, 2])
    if inverted.any():
        frame, *box = tube[np.argmax(inverted)].tolist()
        raise UserError(
            f"{where}: frame {frame:g} has box ({', '.join(f'{v:g}' for v in box)}) with x2 < x1 or y2 < y1"
        )
    resolution = np.asarray(size) if isinstance(size, tuple | list | np.ndarray) else None
    if resolution is not None and resolution.shape == (2,) and np.issubdtype(resolution.dtype, np.number):
        height, width = resolution.tolist()  # plain numbers, numpy scalars or an array
        tube = tube.copy()
        tube[:, [1, 3]] = tube[:, [1, 3]].clip(0, width)
        tube[:, [2, 4]] = tube[:, [2, 4]].clip(0, height)
    return tube


def _targets(
    videos: list[str],
    nframes: list[int],
    tubes: list[dict[int, list[np.ndarray]]],
    class_ids: list[int],
    *,
    annotated_only: bool,
    stride: int,
) -> KeyframeTargets:
    column = {c - 1: j for j, c in enumerate(class_ids)}  # pickle label index -> label column
    kept_videos, video_index, frames, boxes, box_columns, box_keyframes = [], [], [], [], [], []
    num_keyframes = 0
    for video, count, video_tubes in zip(videos, nframes, tubes, strict=True):
        rows = [
            np.column_stack([tube[:, :5], np.full(len(tube), column[label])])  # frame, box, column
            for label, label_tubes in video_tubes.items()
            if label in column
            for tube in label_tubes
        ]
        rows = np.concatenate(rows) if rows else np.zeros((0, 6))
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        row_frame = rows[:, 0].astype(np.int64)
        keyframes = np.unique(row_frame) if annotated_only else np.arange(1, count + 1)
        keyframes = keyframes[::stride]
        if not len(keyframes):
            continue
        start = np.searchsorted(row_frame, keyframes, side="left")
        end = np.searchsorted(row_frame, keyframes, side="right")
        counts = end - start
        # Rows start[k]:end[k] of every keyframe k, concatenated.
        picked = np.repeat(start - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        video_index.append(np.full(len(keyframes), len(kept_videos)))
        kept_videos.append(video)
        frames.append(keyframes)
        boxes.append(rows[picked, 1:5])
        box_columns.append(rows[picked, 5].astype(np.int64))
        box_keyframes.append(np.repeat(np.arange(len(keyframes)) + num_keyframes, counts))
        num_keyframes += len(keyframes)
    frame = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int64)
    box_keyframe = np.concatenate(box_keyframes) if box_keyframes else np.zeros(0, dtype=np.int64)
    columns = np.concatenate(box_columns) if box_columns else np.zeros(0, dtype=np.int64)
    box_keyframe, merged_boxes, labels = _merge_identical_boxes(
        box_keyframe, np.concatenate(boxes) if boxes else np.zeros((0, 4)), columns, len(class_ids)
    )
    _, box_start = KeyframeTargets.group_boxes(box_keyframe, num_keyframes)  # already in order
    return KeyframeTargets(
        videos=kept_videos,
        video_index=np.concatenate(video_index) if video_index else np.zeros(0, dtype=np.int64),
        frame=frame.astype(np.int64),
        timestamp=frame.astype(np.int64),
        box_start=box_start,
        boxes=merged_boxes.astype(np.float32),
        labels=labels,
    )


def _merge_identical_boxes(
    keyframe: np.ndarray, boxes: np.ndarray, columns: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One multi-hot row per distinct box of a keyframe.

    A person doing several actions has one tube per action, all with the same boxes (multi-label
    data such as the synthetic benchmark); they become one box with several labels, as AVA rows do.
    Returns the box rows sorted by keyframe (then by box), their keyframes and (M, K) labels.
    """
    keys = np.column_stack([keyframe.astype(np.float64), boxes.astype(np.float64)])  # (R, 5)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)  # sorted by keyframe first
    labels = np.zeros((len(unique), num_classes), dtype=bool)
    labels[inverse.reshape(-1), columns] = True  # (R,), or (R, 1) on NumPy 2.0.0 -> (R,)
    return unique[:, 0].astype(np.int64), unique[:, 1:], labels
