"""What `evad detect` writes: per-keyframe results, the output folder check and the result files.

`detect_video` (`evad.inference.detect`) fills a `KeyframeResult` per keyframe and returns a
`DetectResult`; `check_output_dir` refuses a folder that already holds results. This module writes
the CSV and the JSON entry of each keyframe (`detect_video` adds the video's header and settings):

- ``detections.csv``: AVA layout ``video, time, x1, y1, x2, y2 (normalised), action_id, score``,
  one row per box and class (every class, as the AVA evaluation expects);
- ``detections.json``: per keyframe its time, frame, and boxes with pixels and normalised
  coordinates, person score, track id and the actions above the action threshold.

Times are written as seconds rounded to the microsecond, the same text in both files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evad.errors import UserError
from evad.evaluation.ava import AvaTable, write_detections_csv
from evad.fileio import folder_entries
from evad.inference.video import VideoInfo

OUTPUT_FILES = ("detections.csv", "detections.json", "annotated.mp4")


@dataclass
class KeyframeResult:
    """Detections on one keyframe, in original pixels.

    Attributes:
        frame: Keyframe index in the video.
        time: Keyframe time in seconds (see `KeyframeClip.time`).
        boxes: (K, 4) xyxy boxes in pixels of the original frame.
        person_scores: (K,) person probabilities.
        action_scores: (K, C) action probabilities, columns in the order of `class_ids`.
        image_size: (height, width) of the original frame.
        track_ids: (K,) track ids (`evad.inference.tracks`).
    """

    frame: int
    time: float
    boxes: np.ndarray
    person_scores: np.ndarray
    action_scores: np.ndarray
    image_size: tuple[int, int]
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class DetectResult:
    """What `detect_video` did.

    Attributes:
        video: Input file.
        out_dir: Output folder.
        csv_path, json_path, video_path: The written files.
        info: The input video's header information.
        num_frames: Frames decoded (and written to the annotated video).
        keyframes: Per-keyframe detections.
        codec: Encoder of the annotated video ("libx264", or "mpeg4" as a fallback).
        video_scale: Whole factor by which the annotated video is larger than the input.
        truncated: Whether the input could only be decoded in part.
        seconds: Wall time of the whole call.
    """

    video: Path
    out_dir: Path
    csv_path: Path
    json_path: Path
    video_path: Path
    info: VideoInfo
    num_frames: int
    keyframes: list[KeyframeResult]
    codec: str
    video_scale: int
    truncated: bool
    seconds: float

    @property
    def num_detections(self) -> int:
        return sum(len(k.boxes) for k in self.keyframes)


def check_output_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Raise UserError if `out_dir` is not a folder or already holds results and not `overwrite`."""
    out_dir = Path(out_dir)
    entries = folder_entries(out_dir)
    existing = [name for name in OUTPUT_FILES if name in entries]
    if existing and not overwrite:
        raise UserError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite to replace them")
    return out_dir


def _time_text(seconds: float) -> str:
    return repr(round(float(seconds), 6))


def write_keyframes_csv(
    path: Path, video_id: str, keyframes: Sequence[KeyframeResult], class_ids: Sequence[int]
) -> None:
    """AVA CSV: every box with every class's score."""
    keys, row_key, boxes, labels, scores = [], [], [], [], []
    ids = np.asarray(class_ids, dtype=np.int64)
    for kf in keyframes:
        if not len(kf.boxes):
            continue
        keys.append((video_id, _time_text(kf.time)))
        normalised = _normalised(kf.boxes, kf.image_size)  # (K, 4)
        k, c = kf.action_scores.shape
        row_key.append(np.full(k * c, len(keys) - 1))
        boxes.append(np.repeat(normalised, c, axis=0))  # one row per (box, class)
        labels.append(np.tile(ids, k))
        # (K, C) -> (K * C,), box-major rows
        scores.append(np.round(kf.action_scores.astype(np.float64), 6).reshape(-1))
    table = AvaTable(
        source=str(path),
        keys=keys,
        row_key=np.concatenate(row_key) if keys else np.zeros(0, np.int64),
        boxes=np.concatenate(boxes) if keys else np.zeros((0, 4)),
        labels=np.concatenate(labels) if keys else np.zeros(0, np.int64),
        scores=np.concatenate(scores) if keys else np.zeros(0),
    )
    write_detections_csv(path, table)


def keyframe_json(
    kf: KeyframeResult, class_ids: Sequence[int], class_names: Sequence[str], action_threshold: float
) -> dict:
    """The JSON entry of one keyframe: its time, frame and detections with the actions scoring at
    least `action_threshold`, best first."""
    normalised = _normalised(kf.boxes, kf.image_size)  # (K, 4), the numbers of detections.csv
    detections = []
    for k in range(len(kf.boxes)):
        scores = kf.action_scores[k]
        above = [int(c) for c in np.argsort(-scores, kind="stable") if scores[c] >= action_threshold]
        box = kf.boxes[k].astype(np.float64)
        detections.append(
            {
                "track_id": int(kf.track_ids[k]),
                "box": [round(float(v), 2) for v in box],
                "box_normalized": normalised[k].tolist(),
                "person_score": round(float(kf.person_scores[k]), 6),
                "actions": [
                    {"id": int(class_ids[c]), "name": class_names[c], "score": round(float(scores[c]), 6)}
                    for c in above
                ],
            }
        )
    return {"time": float(_time_text(kf.time)), "frame": kf.frame, "detections": detections}


def _normalised(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Pixel xyxy boxes as fractions of the frame, rounded to 6 decimals (both files use this)."""
    h, w = image_size
    return np.round(boxes / np.array([w, h, w, h], np.float64), 6)
