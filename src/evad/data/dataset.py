"""`ClipDataset`: keyframes with boxes (`KeyframeTargets`, built by the AVA and UCF101-24 / JHMDB
readers) turned into transformed clips with their targets (SPEC sections 1 and 9)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from evad.data.frames import FrameSource, clip_frame_numbers
from evad.data.transforms import ClipTransform
from evad.errors import UserError


@dataclass
class KeyframeTargets:
    """Keyframes and their boxes, in flat arrays (shared copy-on-write by DataLoader workers).

    Attributes:
        videos: Distinct videos.
        video_index: (N,) index into `videos` of each keyframe.
        frame: (N,) 1-based frame number of each keyframe.
        timestamp: (N,) what items report as "timestamp" (AVA second, or the frame number).
        box_start: (N + 1,) the boxes of keyframe i are rows box_start[i]:box_start[i + 1].
        boxes: (B, 4) float32 x1, y1, x2, y2, in pixels or as fractions of the frame size.
        labels: (B, K) bool multi-hot labels.
    """

    videos: list[str]
    video_index: np.ndarray
    frame: np.ndarray
    timestamp: np.ndarray
    box_start: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray

    @staticmethod
    def group_boxes(box_keyframe: np.ndarray, num_keyframes: int) -> tuple[np.ndarray, np.ndarray]:
        """Stable order of boxes by keyframe, and the (N + 1,) offsets of each keyframe's boxes."""
        order = np.argsort(box_keyframe, kind="stable")
        counts = np.bincount(box_keyframe, minlength=num_keyframes)
        return order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


class ClipDataset(Dataset):
    """Clips around keyframes with their boxes and labels; AvaDataset and TubeDataset build it.

    An item is a dict: "clip" (3, T, h, w) float32 normalised, "boxes" (M, 4) float32 x1, y1, x2,
    y2 in pixels of the resized clip, "labels" (M, K) float32 multi-hot (column j is class
    `class_ids[j]`), "video" str, "timestamp" int, "orig_size" (H0, W0) of the source frames and
    "size" (h, w) after the resize.

    Args:
        targets: Keyframes and boxes.
        source: Frame folders or video files; scanned here, so missing inputs fail now.
        transform: Resize / flip / normalisation.
        split: "train" or "val".
        class_ids: Class id of each label column.
        class_names: Name of each label column.
        num_frames: Clip length T.
        sampling_rate: Frames between clip frames; 0 repeats the keyframe (a keyframe-only input,
            for ablations).
        normalized_boxes: Boxes are fractions of the frame size (AVA) rather than pixels.
    """

    size_divisor: int = 32  # padding multiple of its batches; `build_loader` reads it

    def __init__(
        self,
        targets: KeyframeTargets,
        source: FrameSource,
        transform: ClipTransform,
        *,
        split: str,
        class_ids: Sequence[int],
        class_names: Sequence[str],
        num_frames: int = 16,
        sampling_rate: int = 4,
        normalized_boxes: bool = False,
    ) -> None:
        if num_frames < 1 or sampling_rate < 0:
            raise UserError(
                f"num_frames must be positive and sampling_rate >= 0, got {num_frames}, {sampling_rate}"
            )
        self.split = split
        self.class_ids = [int(c) for c in class_ids]
        self.class_names = list(class_names)
        self.num_frames = num_frames
        self.sampling_rate = sampling_rate
        self.source = source
        self.transform = transform
        self.normalized_boxes = normalized_boxes
        self._targets = targets
        self.keyframes: list[tuple[str, int]] = [
            (targets.videos[v], t)
            for v, t in zip(targets.video_index.tolist(), targets.timestamp.tolist(), strict=True)
        ]
        last = source.scan(targets.videos)
        self._last = np.asarray([last[video] for video in targets.videos], dtype=np.int64)
        self._check_frames()

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def _check_frames(self) -> None:
        """Every keyframe and every frame of its clip exists (clip frames clamped to the video)."""
        t = self._targets
        order = np.argsort(t.video_index, kind="stable")
        bounds = np.searchsorted(t.video_index[order], np.arange(len(t.videos) + 1))
        for v, video in enumerate(t.videos):
            keyframes = t.frame[order[bounds[v] : bounds[v + 1]]]
            if len(keyframes):
                clips = clip_frame_numbers(keyframes, self.num_frames, self.sampling_rate, self._last[v])
                self.source.check(video, np.concatenate([keyframes, np.unique(clips)]))

    def __len__(self) -> int:
        return len(self.keyframes)

    def clip_frame_numbers(self, index: int) -> np.ndarray:
        """1-based frame numbers of the clip of item `index`."""
        t = self._targets
        last = self._last[t.video_index[index]]
        return clip_frame_numbers(int(t.frame[index]), self.num_frames, self.sampling_rate, last)

    def __getitem__(self, index: int) -> dict[str, Any]:
        t = self._targets
        video, timestamp = self.keyframes[index]
        frames = self.source.read(video, self.clip_frame_numbers(index))  # (T, H0, W0, 3)
        height, width = frames.shape[1:3]
        start, end = t.box_start[index], t.box_start[index + 1]
        boxes = t.boxes[start:end].astype(np.float32)
        if self.normalized_boxes:
            boxes *= np.asarray([width, height, width, height], dtype=np.float32)
        clip, boxes, size = self.transform(frames, boxes)
        return {
            "clip": clip,
            "boxes": boxes,
            "labels": torch.from_numpy(t.labels[start:end].astype(np.float32)),
            "video": video,
            "timestamp": timestamp,
            "orig_size": (height, width),
            "size": size,
        }
