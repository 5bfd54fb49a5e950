"""Scoring a validation set's detections with the official protocols (SPEC sections 10-11).

`evad.engine.predict.run_inference` turns batches into per-keyframe detections (boxes in
original-frame pixels and normalised, person and action scores); `evaluate` runs it, gathers the
detections on rank 0 and scores them:

- AVA-format datasets (with `groundtruth_csv`, `labelmap_path`, `exclusions_csv`): frame-mAP of
  `evaluation.ava.AvaEvaluator` over the label map's classes that the dataset trains
  (`dataset.class_ids`), with the three group means, and `person_AP`, the AP@0.5 of the kept
  boxes ranked by person score (`evaluation.baselines.person_ap`: how well the boxes alone find
  people). Files: ``detections.csv`` in the `evad evaluate ava` layout (video, second, normalised
  x1 y1 x2 y2, action id, score) and ``metrics.json`` as `evad evaluate ava --json` writes it,
  plus `person_AP` (the CSV has no person scores). When the dataset trains only some of the
  label map's classes, ``labelmap_scored.pbtxt`` lists the scored ones and `metrics.json` names it.
- Tube datasets (UCF101-24 / JHMDB, with `groundtruth`): frame-mAP and video-mAP of
  `evaluation.tubes.evaluate_tubes`. Files: ``detections.csv`` in the `evad evaluate tubes`
  layout (video, frame, x1 y1 x2 y2 in original pixels, 0-based label = class id - 1, score) and
  ``metrics.json`` as `evad evaluate tubes --json` writes it. When the dataset trains a subset of
  the classes, the means are over that subset, and `metrics.json` lists its `classes` (re-score
  with `evad evaluate tubes --classes` and their ids).

Each detection contributes one row per class with the class's sigmoid score (not multiplied by the
person score, as in the official model). Re-scoring the written CSV with `evad evaluate` gives the
same numbers.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from evad.config import Config
from evad.engine import distributed
from evad.engine.checkpoint import unwrap
from evad.engine.predict import KeyframeDetections, gather_detections, run_inference
from evad.errors import UserError
from evad.evaluation.ava import MAX_DETECTIONS_PER_KEYFRAME
from evad.fileio import make_dirs, write_atomically, write_json_atomically
from evad.models.detector import EVAD
from evad.models.factory import ModelConfig, build_model, build_postprocess
from evad.models.postprocess import PostProcess

logger = logging.getLogger(__name__)

DETECTIONS_CSV = "detections.csv"
SCORED_LABELMAP = "labelmap_scored.pbtxt"
METRICS_JSON = "metrics.json"


# ----------------------------------------------------------------------------------------------
# Scoring


def _is_ava(dataset: Any) -> bool:
    return hasattr(dataset, "groundtruth_csv")


def evaluate_ava_detections(
    results: Sequence[KeyframeDetections],
    dataset: Any,
    out_dir: Path | None,
    max_per_keyframe: int = MAX_DETECTIONS_PER_KEYFRAME,
    input_order: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Frame-mAP of AVA detections; returns (summary for logs, full report for metrics.json)."""
    from evad.evaluation.ava import (
        AvaEvaluator,
        keyframe_key,
        read_exclusions,
        read_groundtruth,
        read_labelmap,
        write_detections_csv,
        write_labelmap,
    )
    from evad.evaluation.baselines import person_ap, person_detections

    names = read_labelmap(getattr(dataset, "eval_labelmap_path", dataset.labelmap_path))
    # Score the trained classes that the evaluation label map lists (AVA: 60 of the 80 outputs).
    columns = [j for j, c in enumerate(dataset.class_ids) if int(c) in names]
    class_ids = [int(dataset.class_ids[j]) for j in columns]
    scored = {cid: names[cid] for cid in class_ids}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groundtruth = read_groundtruth(dataset.groundtruth_csv)
        excluded = read_exclusions(dataset.exclusions_csv) if dataset.exclusions_csv is not None else set()
        evaluator = AvaEvaluator(
            groundtruth,
            scored,
            excluded,
            class_ids,
            max_per_keyframe=max_per_keyframe,
            input_order=input_order,
        )
        for item in results:
            scores = item.action_scores[:, columns]
            evaluator.process([item.video], [item.timestamp], [item.boxes_normalized], [scores])
        result = evaluator.evaluate()
        people = person_detections(
            [keyframe_key(item.video, item.timestamp) for item in results],
            [item.boxes_normalized for item in results],
            [item.person_scores for item in results],
        )
        person = person_ap(groundtruth, people, excluded)
    for message in dict.fromkeys(str(w.message) for w in caught):
        logger.warning("evaluation: %s", message)
    report = result.to_dict()
    report["person_AP"] = person
    labelmap = str(getattr(dataset, "eval_labelmap_path", dataset.labelmap_path))
    if len(scored) < len(names) and out_dir is not None:
        # The model trains only some of the label map's classes: the scored ones get a label map of
        # their own, so that the files metrics.json names re-score to its numbers.
        labelmap = str(out_dir / SCORED_LABELMAP)
        write_atomically(labelmap, lambda tmp: write_labelmap(tmp, scored))
    report["files"] = {
        "groundtruth": str(dataset.groundtruth_csv),
        "detections": str(out_dir / DETECTIONS_CSV) if out_dir is not None else None,
        "labelmap": labelmap,
        "exclusions": None if dataset.exclusions_csv is None else str(dataset.exclusions_csv),
    }
    if out_dir is not None:
        write_atomically(
            out_dir / DETECTIONS_CSV, lambda tmp: write_detections_csv(tmp, evaluator.detections())
        )
    summary = {
        "frame_mAP": result.mean_ap,
        **{f"mAP_{k}": v for k, v in result.groups.items()},
        "person_AP": person,
    }
    return summary, report


def _write_tube_csv(path: str, detections: Any, videos: Sequence[str]) -> None:
    """Rows ``video, frame, x1, y1, x2, y2, label, score`` (float32 values, exactly as read back)."""
    columns = (
        detections.video.tolist(),
        detections.frame.tolist(),
        detections.boxes.tolist(),
        detections.label.tolist(),
        detections.scores.tolist(),
    )
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        for video, frame, box, label, score in zip(*columns, strict=True):
            file.write(
                f"{videos[video]},{frame},{box[0]!r},{box[1]!r},{box[2]!r},{box[3]!r},{label},{score!r}\n"
            )


def evaluate_tube_detections(
    results: Sequence[KeyframeDetections], dataset: Any, out_dir: Path | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Frame- and video-mAP of UCF101-24 / JHMDB detections; returns (summary, full report)."""
    from evad.evaluation.tubes import FrameDetections, evaluate_tubes

    groundtruth = dataset.groundtruth
    labels = np.asarray([int(c) - 1 for c in dataset.class_ids], dtype=np.int64)  # 1-based ids -> indices
    video_index = {name: i for i, name in enumerate(groundtruth.videos)}
    video, frame, label, boxes, scores = [], [], [], [], []
    for item in results:
        if item.video not in video_index:
            raise ValueError(f"video {item.video!r} is not a test video of the ground truth")
        k, c = item.action_scores.shape
        video.append(np.full(k * c, video_index[item.video], dtype=np.int64))
        frame.append(np.full(k * c, item.timestamp, dtype=np.int64))
        label.append(np.tile(labels, k))
        boxes.append(np.repeat(item.boxes, c, axis=0))  # (K, 4) -> (K * C, 4), box-major rows
        scores.append(item.action_scores.reshape(-1))  # (K, C) -> (K * C,), box-major rows
    detections = FrameDetections(
        video=np.concatenate([*video, np.zeros(0, np.int64)]),
        frame=np.concatenate([*frame, np.zeros(0, np.int64)]),
        label=np.concatenate([*label, np.zeros(0, np.int64)]),
        boxes=np.concatenate([*boxes, np.zeros((0, 4), np.float32)]).astype(np.float32),
        scores=np.concatenate([*scores, np.zeros(0, np.float32)]).astype(np.float32),
    )
    frames = None
    if getattr(dataset, "stride", 1) > 1:  # every n-th test frame: score only those frames
        frames = np.asarray([(video_index[item.video], item.timestamp) for item in results], np.int64)
        frames = frames.reshape(-1, 2)  # (F, 2), or (0,) with no results -> (F, 2) (video, frame)
        logger.info("evaluation: one test frame in %d scored; video-mAP needs every frame", dataset.stride)
    metrics = evaluate_tubes(groundtruth, detections, frames=frames)
    for message in metrics.warnings:
        logger.warning("evaluation: %s", message)
    subset = len(labels) < len(groundtruth.labels)
    if subset:  # a class subset: means over the trained classes, as `evad evaluate tubes --classes`
        metrics = metrics.subset(labels)
    report = metrics.to_dict()
    if subset:
        report["classes"] = list(metrics.labels)
    if out_dir is not None:
        write_atomically(
            out_dir / DETECTIONS_CSV, lambda tmp: _write_tube_csv(tmp, detections, groundtruth.videos)
        )
    summary = {
        "frame_mAP": report["frame_mAP"],
        **{f"video_mAP@{k}": v for k, v in report["video_mAP"].items()},
    }
    return summary, report


def score_detections(
    results: Sequence[KeyframeDetections],
    dataset: Any,
    out_dir: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    *,
    ava_max_per_keyframe: int = MAX_DETECTIONS_PER_KEYFRAME,
    ava_input_order: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score gathered detections with the dataset's protocol; write the CSV and JSON to `out_dir`.

    `settings` (e.g. the keep rate and person threshold the detections were made with) are stored
    in the report under "settings", so that metrics.json says how its numbers were made.

    Returns:
        A summary (`frame_mAP` plus group or video means, for logs) and the full report.
    """
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        make_dirs(out)
    if _is_ava(dataset):
        summary, report = evaluate_ava_detections(
            results, dataset, out, ava_max_per_keyframe, ava_input_order
        )
    elif hasattr(dataset, "groundtruth"):
        summary, report = evaluate_tube_detections(results, dataset, out)
    else:
        raise ValueError("dataset has neither AVA ground truth (groundtruth_csv) nor tubes (groundtruth)")
    if settings is not None:
        report = {"settings": dict(settings), **report}
    if out is not None:
        write_json_atomically(out / METRICS_JSON, report)
    return summary, report


def evaluate(
    model: nn.Module,
    loader: Iterable,
    dataset: Any,
    postprocess: PostProcess,
    *,
    keep_rate: float | None = None,
    out_dir: str | Path | None = None,
    device: torch.device | None = None,
    amp: str = "none",
    progress: bool = True,
    ava_max_per_keyframe: int = MAX_DETECTIONS_PER_KEYFRAME,
    ava_input_order: bool = False,
) -> dict[str, Any]:
    """Run inference, gather on rank 0, score, write files there and share the summary.

    Args:
        model: The detector (possibly DDP-wrapped).
        loader: Validation batches (this process's shard when distributed).
        dataset: The validation dataset: `class_ids` and its ground truth (see the module doc).
        postprocess: Person threshold and box rescaling.
        keep_rate: Token keep rate at inference; None uses the model's.
        out_dir: Where rank 0 writes `detections.csv` and `metrics.json`; None writes nothing.
        device: As in `run_inference`.
        amp: As in `run_inference`.
        progress: As in `run_inference`.
        ava_max_per_keyframe: Cap on detections per keyframe of AVA's frame-mAP (see
            `evaluation.ava.evaluate_ava`).
        ava_input_order: Match AVA detections in the model's query order (see
            `evaluation.ava.evaluate_ava`).

    Returns:
        On every process: `frame_mAP` and the group means (AVA) or video-mAPs (tubes), and
        `report`, the full metrics (rank 0; None elsewhere).
    """
    results = run_inference(model, loader, postprocess, keep_rate, device, amp, progress)
    gathered = gather_detections(results)
    summary: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    if distributed.is_main_process():
        settings = {
            "keep_rate": keep_rate if keep_rate is not None else unwrap(model).backbone.keep_rate,
            "person_threshold": postprocess.person_threshold,
        }
        summary, report = score_detections(
            gathered,
            dataset,
            out_dir,
            settings,
            ava_max_per_keyframe=ava_max_per_keyframe,
            ava_input_order=ava_input_order,
        )
        summary["num_keyframes"] = len(gathered)
    summary = distributed.broadcast_object(summary)
    return {**summary, "report": report}


# ----------------------------------------------------------------------------------------------
# Building a model and the validation data from a config (`evad.engine.eval_checkpoint` runs `evad eval`)


def make_model(config: Config, num_classes: int) -> tuple[ModelConfig, EVAD]:
    """The config's `ModelConfig` for `num_classes` and the model it builds. Options that no module
    accepts (a tubelet that does not divide the frames, heads that do not divide a width, ...) are a
    `UserError` naming them, before any training or evaluation runs."""
    model_cfg = config.model.model_config(num_classes)
    try:
        return model_cfg, build_model(model_cfg)
    except ValueError as err:
        raise UserError(f"model: {err}") from None


def make_postprocess(config: Config, model_cfg: ModelConfig) -> PostProcess:
    """Post-processing with `eval.person_threshold`, or the model's threshold when that is None."""
    return build_postprocess(model_cfg, config.eval.person_threshold)


def build_val_data(config: Config) -> tuple[Any, Any]:
    """The validation dataset of `config.data` and its loader (`evad.data.build`)."""
    from evad.data.build import build_dataset, build_loader

    dataset = build_dataset(config.data, "val")
    loader = build_loader(
        dataset,
        config.eval.batch_size,
        train=False,
        num_workers=config.data.num_workers,
        seed=config.train.seed,
    )
    return dataset, loader
