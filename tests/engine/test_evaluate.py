"""Inference and scoring: AVA frame-mAP and UCF/JHMDB frame/video-mAP files agree with `evad evaluate`."""

import copy
import json

import numpy as np
import pytest
import torch

from evad.engine.evaluate import score_detections
from evad.engine.predict import KeyframeDetections, gather_detections, run_inference
from evad.evaluation.ava import evaluate_ava_files
from evad.evaluation.tubes import evaluate_tubes, read_detections
from evad.models.factory import create_model
from evad.models.postprocess import PostProcess
from tiny_data import ORIG, TinyDataset, loader


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=3)
    dataset = TinyDataset(6, flip=False, root=tmp_path_factory.mktemp("gt"))
    out = run_inference(
        model, loader(dataset, 4, shuffle=False), PostProcess(0.0), keep_rate=0.7, progress=False
    )
    return dataset, out


def oracle(dataset):
    """Perfect detections: the ground-truth boxes with their labels as scores."""
    items = []
    for i in range(len(dataset)):
        item = dataset[i]
        scale = np.array([ORIG[1], ORIG[0], ORIG[1], ORIG[0]]) / 32
        boxes = item["boxes"].numpy() * scale
        items.append(
            KeyframeDetections(
                item["video"],
                item["timestamp"],
                boxes.astype(np.float32),
                item["boxes"].double().numpy() / 32,
                np.ones(1, np.float32),
                item["labels"].numpy().astype(np.float32),
                ORIG,
            )
        )
    return items


def test_run_inference_returns_one_entry_per_keyframe(results):
    dataset, out = results
    assert [(r.video, r.timestamp) for r in out] == dataset.keyframes
    first = out[0]
    assert first.image_size == ORIG
    assert first.action_scores.shape == (len(first.boxes), 3) and len(first.boxes) == 10  # threshold 0
    assert (first.boxes[:, 2] <= ORIG[1]).all() and (first.boxes[:, 3] <= ORIG[0]).all()
    np.testing.assert_allclose(
        first.boxes_normalized, first.boxes / np.array([ORIG[1], ORIG[0], ORIG[1], ORIG[0]]), rtol=1e-6
    )


def test_gather_without_process_group_sorts_and_dedupes(results):
    _, out = results
    gathered = gather_detections(list(reversed(out)) + out[:2])
    assert [(r.video, r.timestamp) for r in gathered] == sorted((r.video, r.timestamp) for r in out)


def test_ava_files_rescore_to_the_same_numbers(results, tmp_path):
    dataset, out = results
    summary, report = score_detections(out, dataset, tmp_path)
    again = evaluate_ava_files(dataset.groundtruth_csv, tmp_path / "detections.csv", dataset.labelmap_path)
    assert again.mean_ap == pytest.approx(summary["frame_mAP"], abs=1e-12)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["mAP"] == report["mAP"] == summary["frame_mAP"]
    assert set(stored["per_class"]) == {"1", "2", "3"} and "files" in stored
    assert 0.0 <= stored["person_AP"] == summary["person_AP"] <= 1.0
    assert stored["protocol"]["max_detections_per_keyframe"] == 50  # the ActivityNet scorer's cap


def test_ava_perfect_detections_score_one(tmp_path):
    dataset = TinyDataset(6, flip=False, root=tmp_path / "gt")
    summary, _ = score_detections(oracle(dataset), dataset, None)
    assert summary["frame_mAP"] == pytest.approx(1.0)
    assert summary["mAP_person_movement"] is None  # ids 1-3 only: not AVA's label map, no AVA groups
    assert summary["person_AP"] == pytest.approx(1.0)


def test_ava_person_ap_scores_the_boxes_alone(tmp_path):
    # The true boxes with wrong action scores still find every person; boxes on nobody find no one.
    dataset = TinyDataset(6, flip=False, root=tmp_path / "gt")
    items = oracle(dataset)
    for item in items:
        item.action_scores = 1.0 - item.action_scores
    summary, _ = score_detections(items, dataset, None)
    assert summary["person_AP"] == pytest.approx(1.0) and summary["frame_mAP"] < 1.0
    for item in items:
        item.boxes_normalized = item.boxes_normalized * 0.1  # shrunk into the top-left corner
    summary, _ = score_detections(items, dataset, None)
    assert summary["person_AP"] == 0.0


def test_ava_class_subset_is_scored_on_its_classes(tmp_path):
    dataset = TinyDataset(6, flip=False, root=tmp_path / "gt")
    dataset.class_ids = [1, 3]
    items = oracle(dataset)
    for item in items:
        item.action_scores = item.action_scores[:, [0, 2]]
    _, report = score_detections(items, dataset, None)
    assert set(report["per_class"]) == {"1", "3"} and report["mAP"] == pytest.approx(1.0)


def test_ava_class_subset_files_rescore_to_the_same_numbers(results, tmp_path):
    dataset, out = results
    dataset = copy.copy(dataset)
    dataset.class_ids = [1, 3]
    items = [copy.copy(item) for item in out]
    for item in items:
        item.action_scores = item.action_scores[:, [0, 2]]
    summary, report = score_detections(items, dataset, tmp_path)
    files = json.loads((tmp_path / "metrics.json").read_text())["files"]
    assert files["labelmap"] == str(tmp_path / "labelmap_scored.pbtxt")
    with pytest.warns(UserWarning, match="classes outside the label map"):  # class 2 is not scored
        again = evaluate_ava_files(files["groundtruth"], files["detections"], files["labelmap"])
    assert again.mean_ap == pytest.approx(summary["frame_mAP"], abs=1e-12)
    assert set(again.per_class) == {1, 3} == {int(c) for c in report["per_class"]}


def test_ava_eval_labelmap_scores_only_its_classes(tmp_path):
    # AVA: 80 trained outputs, the 60 ActivityNet classes scored; here 3 outputs, classes 1 and 3 scored.
    dataset = TinyDataset(6, flip=False, root=tmp_path / "gt")
    dataset.eval_labelmap_path = tmp_path / "eval.pbtxt"
    items = "".join(f'item {{\n  name: "{n}"\n  id: {c}\n}}\n' for c, n in ((1, "a"), (3, "c")))
    dataset.eval_labelmap_path.write_text(items)
    items = oracle(dataset)
    for item in items:
        item.action_scores[:, 1] = 0.0  # class 2 is not scored, so missing it costs nothing
    _, report = score_detections(items, dataset, None)
    assert set(report["per_class"]) == {"1", "3"} and report["mAP"] == pytest.approx(1.0)


def tube_dataset(tmp_path):
    dataset = TinyDataset(6, flip=False, root=tmp_path / "gt")
    del dataset.groundtruth_csv  # a tube dataset: no AVA files
    return dataset


def test_tube_files_rescore_to_the_same_numbers(results, tmp_path):
    _, out = results
    dataset = tube_dataset(tmp_path)
    summary, report = score_detections(out, dataset, tmp_path)
    gt = dataset.groundtruth
    again = evaluate_tubes(gt, read_detections(tmp_path / "detections.csv", gt))
    assert again.frame_map == pytest.approx(summary["frame_mAP"], abs=1e-12)
    assert again.video_map == pytest.approx(report["video_mAP"])
    assert set(summary) >= {"frame_mAP", "video_mAP@0.5", "video_mAP@0.5:0.95"}
    rows = (tmp_path / "detections.csv").read_text().splitlines()
    video, frame, *_, label, _score = rows[0].split(",")
    assert (video, frame) == ("vid0", "1") and label in {"0", "1", "2"}


def test_tube_perfect_detections(tmp_path):
    dataset = tube_dataset(tmp_path)
    items = oracle(dataset)
    for item in items:  # the ground-truth tubes are of label index 0
        item.action_scores = np.array([[1.0, 0.0, 0.0]], np.float32)
    summary, _ = score_detections(items, dataset, None)
    assert summary["frame_mAP"] == pytest.approx(1 / 3)  # classes 2 and 3 have no ground truth: AP 0
    dataset.class_ids = [1]
    for item in items:
        item.action_scores = item.action_scores[:, :1]
    summary, report = score_detections(items, dataset, None)
    assert summary["frame_mAP"] == pytest.approx(1.0) and report["classes"] == ["class1"]


def test_tube_every_nth_frame_scores_only_those_frames(tmp_path):
    # data.val_stride=2 scores frames 1, 3, 5: the ground truth of frames 2, 4, 6 must not count as missed.
    dataset = tube_dataset(tmp_path)
    dataset.class_ids = [1]
    items = [item for item in oracle(dataset) if item.timestamp % 2 == 1]
    for item in items:
        item.action_scores = np.array([[1.0]], np.float32)
    summary, _ = score_detections(items, dataset, None)
    assert summary["frame_mAP"] < 0.75  # scored as if every frame had been run: half the boxes missed
    dataset.stride = 2
    summary, report = score_detections(items, dataset, None)
    assert summary["frame_mAP"] == pytest.approx(1.0)
    assert report["video_mAP"] == {} and set(summary) == {"frame_mAP"}  # video-mAP needs every frame


def test_unknown_dataset_kind_is_refused(results):
    _, out = results
    with pytest.raises(ValueError, match="neither"):
        score_detections(out, TinyDataset(2), None)
