"""Streaming AVA frame-mAP for a training or evaluation loop (reset / process / evaluate).

:class:`AvaEvaluator` reads and prepares the ground truth once, collects each batch's per-keyframe
boxes and action scores (arrays or tensors) as detection rows, and scores them with
`evad.evaluation.ava.scoring` exactly as the CSV they would make (`evad.engine.evaluate` uses it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from evad.evaluation.ava.io import (
    AvaTable,
    Key,
    keyframe_key,
    read_exclusions,
    read_groundtruth,
    read_labelmap,
)
from evad.evaluation.ava.scoring import MAX_DETECTIONS_PER_KEYFRAME, AvaResult, score_detections
from evad.evaluation.ava.selection import prepare_groundtruth


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        # float64 before numpy: bfloat16 (a model run under bf16 autocast) has no numpy dtype
        value = value.detach().cpu().double().numpy()
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
        self._groundtruth = prepare_groundtruth(table, names, excluded)
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
            box, score = _as_numpy(box), _as_numpy(score)
            where = f"keyframe {video_id!s}, {second}"
            if box.size == 0:
                box = box.reshape(0, 4)  # (0,) with no boxes -> (0, 4)
            elif box.ndim != 2 or box.shape[1] != 4:
                raise ValueError(f"{where}: boxes must be (P, 4) normalised x1, y1, x2, y2, got {box.shape}")
            if not (np.isfinite(box).all() and np.isfinite(score).all()):
                raise ValueError(f"{where}: boxes and scores must be finite, got NaN or infinite values")
            if score.shape == (0,):  # no boxes, as `box` above -> (0, C)
                score = score.reshape(0, len(self.class_ids) if self.class_ids is not None else 0)
            if score.ndim != 2 or score.shape[0] != box.shape[0]:
                raise ValueError(
                    f"{where}: scores must be (P, C) for P = {box.shape[0]} boxes, got {score.shape}"
                )
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
        return score_detections(self._groundtruth, self.detections(), self.max_per_keyframe, self.input_order)
