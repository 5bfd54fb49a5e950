"""What a detector's boxes cost, next to what its action scores add (issue 3 diagnosis).

Scores one detections CSV (`evad eval` writes `detections.csv`) with the AVA frame-mAP@0.5 three
ways:

* as it is;
* with every action score replaced by that class's share of the training boxes, i.e. a classifier
  that has learned nothing, on the detections' own boxes;
* with the same scores on the ground-truth boxes: perfect localization, no classification.

Constant scores tie; the two class-share rows break the ties at random and average the results of
20 seeds (the expected AP of a random order).

It also prints how the kept boxes cover the held-out people: boxes and people per keyframe, the
share of people with a box at IoU >= 0.5, the share of boxes that overlap nobody at IoU >= 0.5, the
extra boxes on an already covered person, the median IoU of each person's best box, and, over the
people some box overlaps, the median error of that box's width and height (|log(predicted / true)|),
and the people's median width (a fraction of the frame's).

Usage (after `make demo`, whose last evaluation wrote its held-out detections)::

    python benchmarks/box_limits.py demo-output/data demo-output/train/eval/detections.csv

DATA is an AVA-format root with `annotations/train.csv`, `annotations/val.csv`,
`annotations/labelmap.pbtxt` and, optionally, `annotations/val_excluded_timestamps.csv`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from evad.errors import UserError
from evad.evaluation.ava import (
    IOU_THRESHOLD,
    AvaTable,
    evaluate_ava,
    read_detections,
    read_exclusions,
    read_groundtruth,
    read_labelmap,
)
from evad.evaluation.baselines import class_share_map, class_shares, distinct_boxes
from evad.ops.boxes import box_iou


def coverage(groundtruth: AvaTable, detections: AvaTable, excluded: set = frozenset()) -> dict[str, float]:
    """How the detections' boxes cover the ground-truth people (see the module docstring)."""
    people = {key: boxes for key, boxes in distinct_boxes(groundtruth).items() if key not in excluded}
    kept = distinct_boxes(detections)
    num_people = num_boxes = found = extra = stray = 0
    best_iou, width_err, height_err = [], [], []
    for key, truth in people.items():
        boxes = kept.get(key, np.zeros((0, 4)))
        num_people += len(truth)
        num_boxes += len(boxes)
        if len(boxes) == 0:
            best_iou += [0.0] * len(truth)
            continue
        iou = box_iou(torch.as_tensor(boxes), torch.as_tensor(truth))[0].numpy()  # (boxes, people)
        hits = iou >= IOU_THRESHOLD  # 0.5
        found += int(hits.any(0).sum())
        extra += int(np.clip(hits.sum(0) - 1, 0, None).sum())
        stray += int((~hits.any(1)).sum())
        best_iou += iou.max(0).tolist()
        touched = iou.max(0) > 0  # people some box overlaps at all
        best = boxes[iou.argmax(0)][touched]  # their best boxes, (touched, 4)
        true = truth[touched]
        errors = np.abs(np.log((best[:, 2:] - best[:, :2]) / (true[:, 2:] - true[:, :2])))  # (touched, 2)
        width_err += errors[:, 0].tolist()
        height_err += errors[:, 1].tolist()
    return {
        "boxes_per_keyframe": num_boxes / max(len(people), 1),
        "people_per_keyframe": num_people / max(len(people), 1),
        "people_found": found / max(num_people, 1),
        "boxes_on_nobody": stray / max(num_boxes, 1),
        "extra_boxes_on_a_found_person": extra / max(num_boxes, 1),
        "median_best_iou": float(np.median(best_iou)) if best_iou else 0.0,
        "median_width_error": float(np.median(width_err)) if width_err else float("nan"),
        "median_height_error": float(np.median(height_err)) if height_err else float("nan"),
        "median_person_width": float(np.median(np.concatenate([t[:, 2] - t[:, 0] for t in people.values()]))),
    }


def on_groundtruth_boxes(groundtruth: AvaTable, classes: list[int]) -> AvaTable:
    """One detection row per (distinct ground-truth box, class), scored 0 (set the scores later)."""
    index = {key: i for i, key in enumerate(groundtruth.keys)}
    keys, boxes = [], []
    for key, kf_boxes in distinct_boxes(groundtruth).items():
        keys += [index[key]] * len(kf_boxes)
        boxes.append(kf_boxes)
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    n, c = len(keys), len(classes)
    return AvaTable(
        source="ground-truth boxes",
        keys=groundtruth.keys,
        row_key=np.repeat(np.array(keys, dtype=np.int64), c),
        boxes=np.repeat(boxes, c, axis=0),
        labels=np.tile(np.array(classes, dtype=np.int64), n),
        scores=np.zeros(n * c),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="AVA-format data root (e.g. demo-output/data)")
    parser.add_argument("detections", type=Path, help="detections CSV of the held-out split")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    ann = args.data / "annotations"
    try:
        names = read_labelmap(ann / "labelmap.pbtxt")
        exclusions_file = ann / "val_excluded_timestamps.csv"
        excluded = read_exclusions(exclusions_file) if exclusions_file.exists() else set()
        truth, detections = read_groundtruth(ann / "val.csv"), read_detections(args.detections)
        share = class_shares(read_groundtruth(ann / "train.csv"), list(names))
    except UserError as error:
        print(f"box_limits: error: {error}", file=sys.stderr)
        return 2

    def frame_map(table: AvaTable) -> dict:
        """frame-mAP and per-class AP by class name."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rows of other classes: the official scorer skips them too
            result = evaluate_ava(truth, table, names, excluded)
        return {
            "frame_mAP": result.mean_ap,
            "per_class": {names[c]: ap for c, ap in result.per_class.items()},
        }

    def with_class_shares(table: AvaTable) -> dict:
        """The same, with class shares as scores, averaged over 20 random tie orders."""
        mean_ap, per_class = class_share_map(truth, table, names, share, excluded, seeds=20)
        return {"frame_mAP": mean_ap, "per_class": {names[c]: ap for c, ap in per_class.items()}}

    results = {
        "coverage": coverage(truth, detections, excluded),
        "detections": frame_map(detections),
        "class_shares_on_detected_boxes": with_class_shares(detections),
        "class_shares_on_true_boxes": with_class_shares(on_groundtruth_boxes(truth, list(names))),
    }
    print("boxes and people (held out)")
    for name, value in results["coverage"].items():
        print(f"  {name.replace('_', ' '):32s} {value:.3f}")
    print("frame-mAP@0.5")
    for name in ("detections", "class_shares_on_detected_boxes", "class_shares_on_true_boxes"):
        print(f"  {name.replace('_', ' '):32s} {100 * results[name]['frame_mAP']:5.1f}%")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
