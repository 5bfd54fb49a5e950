"""`evaluate_tubes`: frame-mAP and video-mAP of a split, with the report and its warnings."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evad.errors import UserError
from evad.evaluation.tubes.detections import FrameDetections
from evad.evaluation.tubes.frame_ap import frame_average_precision
from evad.evaluation.tubes.groundtruth import TubeGroundTruth
from evad.evaluation.tubes.ranking import decay_nms
from evad.evaluation.tubes.video_ap import build_tubes, video_average_precision

DEFAULT_VIDEO_THRESHOLDS = ("0.2", "0.5", "0.75", "0.5:0.95")
_RANGE_STEP = 0.05


def parse_iou_thresholds(texts: Sequence[str | float]) -> list[tuple[str, list[float]]]:
    """Parse video-AP thresholds: ``0.5`` / ``"0.5"`` or a range ``"0.5:0.95"`` (step 0.05, averaged).

    Args:
        texts: thresholds, as numbers or texts.

    Returns:
        ``(name, thresholds)`` per text, names normalised (``"0.50"`` -> ``"0.5"``).

    Raises:
        UserError: a text that is not a threshold in (0, 1] or a range of them in steps of 0.05.
    """
    if isinstance(texts, str | int | float):  # a lone "0.5" would be read character by character
        raise UserError(f"IoU thresholds must be a list, e.g. [{texts!r}], got {texts!r}")
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

    def subset(self, indices: Sequence[int]) -> TubeMetrics:
        """The metrics of the classes at 0-based `indices` alone (a model trained on a subset of
        the classes, `data.classes`): the means are then over those classes."""
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            labels=tuple(self.labels[i] for i in idx),
            frame_ap=self.frame_ap[idx],
            video_ap={name: ap[idx] for name, ap in self.video_ap.items()},
        )

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
    if not isinstance(groundtruth, TubeGroundTruth):
        raise TypeError(f"groundtruth must be load_groundtruth's output, got {type(groundtruth).__name__}")
    for name in ("video", "frame", "label", "boxes", "scores"):
        array = getattr(detections, name)
        kind = "iu" if name in ("video", "frame", "label") else "iuf"
        if not isinstance(array, np.ndarray) or array.dtype.kind not in kind:
            what = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            need = "an integer" if kind == "iu" else "a float"
            raise TypeError(f"FrameDetections.{name} must be {need} numpy array, got {what}")
    n = len(detections.scores)
    if detections.boxes.shape != (n, 4):
        raise ValueError(f"FrameDetections.boxes must be (N, 4) = ({n}, 4), got {detections.boxes.shape}")
    if not (
        detections.video.shape == detections.frame.shape == detections.label.shape == detections.scores.shape
    ):
        raise ValueError("FrameDetections arrays disagree in length")
    if not (np.isfinite(detections.boxes).all() and np.isfinite(detections.scores).all()):
        raise ValueError("FrameDetections boxes and scores must be finite, got NaN or infinite values")
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
    if frames is not None:
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[1] != 2 or frames.dtype.kind not in "iu":
            raise ValueError(f"frames must be (F, 2) integer (video index, frame) pairs, got {frames.shape}")
        if len(frames) and not (0 <= frames[:, 0].min() and frames[:, 0].max() < len(groundtruth.videos)):
            raise ValueError(f"frames holds a video index outside 0..{len(groundtruth.videos) - 1}")
        # A frame past its video's end would be read as a frame of the next video (keys are
        # video * stride + frame).
        outside = (frames[:, 1] < 1) | (frames[:, 1] > groundtruth.nframes[frames[:, 0]])
        if outside.any():
            v, f = frames[outside.argmax()].tolist()
            raise ValueError(f"frames holds frame {f} of video {v}, outside 1..{groundtruth.nframes[v]}")
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
