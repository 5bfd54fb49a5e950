"""Oracle analysis on hand-built AVA files: GT boxes fix localization, GT labels fix classification."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evad.cli import main
from evad.errors import UserError
from evad.evaluation.ava import AvaInputWarning
from evad.evaluation.oracle import match_boxes, oracle_analysis

LABELMAP = 'item {\n  name: "stand"\n  id: 1\n}\nitem {\n  name: "sit"\n  id: 2\n}\n'
# Two keyframes; person A stands at (0.1, 0.1, 0.3, 0.5), person B sits at (0.6, 0.2, 0.8, 0.6).
GT = [
    "v,1,0.1,0.1,0.3,0.5,1,0",
    "v,1,0.6,0.2,0.8,0.6,2,1",
    "v,2,0.1,0.1,0.3,0.5,1,0",
    "v,2,0.6,0.2,0.8,0.6,2,1",
]


def write(tmp_path: Path, detections: list[str]) -> tuple[Path, Path, Path]:
    (tmp_path / "gt.csv").write_text("\n".join(GT) + "\n")
    (tmp_path / "det.csv").write_text("\n".join(detections) + "\n")
    (tmp_path / "map.pbtxt").write_text(LABELMAP)
    return tmp_path / "gt.csv", tmp_path / "det.csv", tmp_path / "map.pbtxt"


def test_badly_placed_boxes_with_right_labels_are_fixed_by_gt_boxes(tmp_path):
    # Boxes shifted to IoU 1/3 with their person; the labels are right.
    rows = []
    for second in (1, 2):
        rows += [f"v,{second},0.2,0.1,0.4,0.5,1,0.9", f"v,{second},0.2,0.1,0.4,0.5,2,0.1"]
        rows += [f"v,{second},0.7,0.2,0.9,0.6,2,0.8", f"v,{second},0.7,0.2,0.9,0.6,1,0.2"]
    result = oracle_analysis(*write(tmp_path, rows))
    assert result.detector.mean_ap == 0.0
    assert result.gt_boxes.mean_ap == pytest.approx(1.0)
    assert result.gt_labels.mean_ap == 0.0  # IoU < 0.5: the ground truth gives these boxes no label


def test_right_boxes_with_confused_labels_are_fixed_by_gt_labels(tmp_path):
    # Perfect boxes, but every actor's wrong class outscores its right one at one keyframe.
    rows = [
        "v,1,0.1,0.1,0.3,0.5,1,0.9", "v,1,0.1,0.1,0.3,0.5,2,0.95",
        "v,1,0.6,0.2,0.8,0.6,2,0.3", "v,1,0.6,0.2,0.8,0.6,1,0.97",
        "v,2,0.1,0.1,0.3,0.5,1,0.2", "v,2,0.1,0.1,0.3,0.5,2,0.1",
        "v,2,0.6,0.2,0.8,0.6,2,0.2", "v,2,0.6,0.2,0.8,0.6,1,0.1",
    ]  # fmt: skip
    result = oracle_analysis(*write(tmp_path, rows))
    assert result.detector.mean_ap < 0.75
    assert result.gt_boxes.mean_ap == pytest.approx(result.detector.mean_ap)  # boxes were right already
    assert result.gt_labels.mean_ap == pytest.approx(1.0)


def test_matching_is_one_to_one_and_ignores_boxes_without_overlap():
    gt = np.array([[0.1, 0.1, 0.3, 0.5], [0.6, 0.2, 0.8, 0.6]])
    det = np.array([[0.12, 0.1, 0.3, 0.5], [0.1, 0.1, 0.31, 0.5], [0.9, 0.9, 1.0, 1.0]])
    index, iou = match_boxes(det, gt)
    # Both detections overlap person 0 only; one of them gets it, the other nothing (not person 1).
    assert sorted(index[:2].tolist()) == [-1, 0] and index[2] == -1
    assert iou[index == -1].tolist() == [0.0, 0.0]


def test_cli_prints_both_oracles_and_writes_json(tmp_path, capsys):
    rows = [f"v,{s},0.2,0.1,0.4,0.5,1,0.9" for s in (1, 2)] + [f"v,{s},0.7,0.2,0.9,0.6,2,0.8" for s in (1, 2)]
    gt, det, labelmap = write(tmp_path, rows)
    out = tmp_path / "oracle.json"
    args = [
        "evaluate",
        "oracle",
        "--groundtruth",
        str(gt),
        "--detections",
        str(det),
        "--labelmap",
        str(labelmap),
    ]
    assert main([*args, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "with GT boxes" in printed and "localization limits this detector more" in printed
    data = json.loads(out.read_text())
    assert data["mAP"] == 0.0 and data["mAP_gt_boxes"] == pytest.approx(1.0)
    assert main([*args, "--json", str(out)]) == 2  # never overwritten without --overwrite


def test_empty_detections_score_zero_and_empty_groundtruth_is_an_error(tmp_path):
    gt, det, labelmap = write(tmp_path, [])
    det.write_bytes(b"")
    with pytest.warns(AvaInputWarning, match="det.csv: no detections; every class scores AP 0"):
        result = oracle_analysis(gt, det, labelmap)
    assert result.detector.mean_ap == result.gt_boxes.mean_ap == result.gt_labels.mean_ap == 0.0
    gt.write_bytes(b"")
    det.write_text("v,1,0.1,0.1,0.3,0.5,1,0.9\n")
    with pytest.raises(UserError, match=r"gt\.csv: no ground-truth boxes"):
        oracle_analysis(gt, det, labelmap)


def test_cli_names_neither_when_the_gains_are_equal(tmp_path, capsys):
    rows = [f"{row.rsplit(',', 1)[0]},0.9" for row in GT]  # the ground truth itself: nothing to gain
    gt, det, labelmap = write(tmp_path, rows)
    args = ["evaluate", "oracle", "--groundtruth", str(gt), "--detections", str(det)]
    assert main([*args, "--labelmap", str(labelmap)]) == 0
    printed = capsys.readouterr().out
    assert "+0.00" in printed
    assert "neither localization nor classification limits this detector more" in printed
