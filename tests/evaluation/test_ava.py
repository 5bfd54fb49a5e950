"""AVA frame-mAP (SPEC section 10): hand-computed toy cases, bad input, the evaluator and the CLI."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from evad.errors import UserError
from evad.evaluation.ava import (
    AvaEvaluator,
    AvaInputWarning,
    evaluate_ava_files,
    keyframe_key,
    read_detections,
    read_labelmap,
    write_detections_csv,
)

# Class 1 and 12 are person movement, 17 object manipulation, 79 person interaction.
LABELMAP = "".join(
    f'label {{\n  name: "{name}"\n  label_id: {i}\n}}\n'
    for i, name in [
        (1, "bend/bow (at the waist)"),
        (12, "stand"),
        (17, "carry/hold (an object)"),
        (79, "talk to"),
    ]
)
A = "0.1,0.1,0.4,0.9"  # person boxes, x1,y1,x2,y2
B = "0.5,0.1,0.9,0.9"
ELSEWHERE = "0.0,0.0,0.05,0.05"  # IoU 0 with A and B


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def score(tmp_path, gt, det, exclusions=None, labelmap=LABELMAP):
    """Write the files and score them; warnings propagate to the caller."""
    (tmp_path / "map.pbtxt").write_text(labelmap)
    excl = None if exclusions is None else write(tmp_path / "excl.csv", exclusions)
    return evaluate_ava_files(
        write(tmp_path / "gt.csv", gt), write(tmp_path / "det.csv", det), tmp_path / "map.pbtxt", excl
    )


def quiet_score(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AvaInputWarning)
        return score(*args, **kwargs)


def test_perfect_detector_scores_one(tmp_path):
    gt = [f"v1,0902,{A},1,0", f"v1,0902,{A},17,0", f"v1,0902,{B},79,1", f"v1,0903,{B},12,1"]
    det = [f"v1,0902,{A},1,0.9", f"v1,0902,{A},17,0.8", f"v1,0902,{B},79,0.7", f"v1,0903,{B},12,0.6"]
    result = score(tmp_path, gt, det)
    assert result.mean_ap == 1.0
    assert result.per_class == {1: 1.0, 12: 1.0, 17: 1.0, 79: 1.0}
    assert result.groups == {"person_movement": 1.0, "object_manipulation": 1.0, "person_interaction": 1.0}
    assert result.class_names[12] == "stand"
    assert result.num_groundtruth == {1: 1, 12: 1, 17: 1, 79: 1}


def test_a_label_map_that_is_not_avas_gets_no_ava_groups(tmp_path):
    # The synthetic benchmark's ids 1-13 would all fall in "person movement (ids <= 14)".
    labelmap = "".join(f'label {{\n  name: "c{i}"\n  label_id: {i}\n}}\n' for i in (1, 2, 13))
    result = score(tmp_path, [f"v1,0902,{A},2"], [f"v1,0902,{A},2,0.9"], labelmap=labelmap)
    assert result.mean_ap == 1.0
    assert result.groups == {"person_movement": None, "object_manipulation": None, "person_interaction": None}


def test_duplicate_is_a_false_positive(tmp_path):
    # Ranked: TP (A), duplicate of A -> FP, TP (B); 2 boxes. AP = 1/2 * 1 + 1/2 * 2/3.
    det = [f"v1,902,{A},1,0.9", f"v1,902,{A},1,0.8", f"v1,902,{B},1,0.7"]
    result = score(tmp_path, [f"v1,902,{A},1", f"v1,902,{B},1"], det)
    assert result.per_class[1] == pytest.approx(5 / 6, abs=1e-12)
    assert result.counts["true_positives"] == 2


@pytest.mark.parametrize(("x2", "expected"), [("0.49", 0.0), ("0.5", 1.0)])
def test_iou_just_below_and_at_one_half(tmp_path, x2, expected):
    # Ground truth 0..1 x 0..1; detection 0..x2 x 0..1 has IoU x2.
    result = score(tmp_path, ["v1,902,0,0,1,1,1"], [f"v1,902,0,0,{x2},1,1,0.9"])
    assert result.per_class[1] == expected


def test_no_fall_back_to_the_second_best_box(tmp_path):
    gt = ["v1,902,0.0,0,0.8,1,1", "v1,902,0.2,0,1.0,1,1"]
    # The second detection overlaps both (IoU 0.88 and 0.68) but its best box is already taken.
    det = ["v1,902,0.0,0,0.8,1,1,0.9", "v1,902,0.05,0,0.85,1,1,0.8"]
    assert score(tmp_path, gt, det).per_class[1] == 0.5


def test_excluded_keyframes_are_ignored(tmp_path):
    gt = [f"v1,902,{A},1", f"v1,903,{A},1"]
    det = [f"v1,902,{A},1,0.9", f"v1,903,{ELSEWHERE},1,0.95"]
    # Without exclusions: FP (0.95) then TP (0.9) of 2 boxes: AP = 1/2 * 1/2.
    assert score(tmp_path, gt, det).per_class[1] == 0.25
    for second in ("903", "0903.0"):
        assert score(tmp_path, gt, det, exclusions=[f"v1,{second}"]).per_class[1] == 1.0


def test_more_than_50_detections_at_a_keyframe(tmp_path):
    gt = [f"v1,902,{A},1"]
    crowd = [f"v1,902,{ELSEWHERE},12,0.5"] * 50  # another class: ties in the ranking do not matter
    hit = f"v1,902,{A},1,0.5"
    assert quiet_score(tmp_path, gt, [hit, *crowd]).per_class[1] == 1.0  # heap not yet full
    # Full heap: an equal score does not get in (strictly greater needed), a higher one does.
    assert quiet_score(tmp_path, gt, [*crowd, hit]).per_class[1] == 0.0
    assert quiet_score(tmp_path, gt, [*crowd, f"v1,902,{A},1,0.5000001"]).per_class[1] == 1.0
    result = quiet_score(tmp_path, gt, [*crowd, f"v1,902,{A},1,0.4", f"v1,902,{A},1,0.6"])
    assert result.per_class[1] == 1.0
    assert result.counts["over_cap_rows"] == 2  # the 0.4 row and one of the crowd


def test_cap_keeps_the_50_best_of_each_keyframe(tmp_path):
    # 59 misses and, last, a hit at one keyframe: the 50 best (all misses) push the hit out.
    misses = [f"v1,902,{ELSEWHERE},1,0.9{i % 9}" for i in range(59)]
    assert score(tmp_path, [f"v1,902,{A},1"], [*misses, f"v1,902,{A},1,0.1"]).per_class[1] == 0.0
    # At another keyframe the hit is kept and ranks 51st: precision 1/51 at recall 1/2 (2 boxes).
    result = score(tmp_path, [f"v1,902,{A},1", f"v1,903,{A},1"], [*misses, f"v1,903,{A},1,0.1"])
    assert result.per_class[1] == pytest.approx(0.5 / 51, abs=1e-15)
    assert result.counts["over_cap_rows"] == 9


def test_no_cap_keeps_every_detection(tmp_path):
    misses = [f"v1,902,{ELSEWHERE},1,0.9{i % 9}" for i in range(59)]
    (tmp_path / "map.pbtxt").write_text(LABELMAP)
    files = [
        write(tmp_path / "gt.csv", [f"v1,902,{A},1"]),
        write(tmp_path / "det.csv", [*misses, f"v1,902,{A},1,0.1"]),
    ]
    result = evaluate_ava_files(*files, tmp_path / "map.pbtxt", max_per_keyframe=0)
    assert result.per_class[1] == pytest.approx(1 / 60, abs=1e-15)  # the hit ranks 60th, not pushed out
    assert result.counts["over_cap_rows"] == 0
    assert result.to_dict()["protocol"]["max_detections_per_keyframe"] == 0
    capped = evaluate_ava_files(*files, tmp_path / "map.pbtxt", max_per_keyframe=59)
    assert capped.per_class[1] == 0.0 and capped.counts["over_cap_rows"] == 1
    boxes = np.array([[0.0, 0.0, 0.05, 0.05]] * 59 + [[0.1, 0.1, 0.4, 0.9]])  # (60, 4): 59 misses, a hit
    scores = np.r_[np.full(59, 0.9), 0.1][:, None]  # (60, 1)
    for cap, expected in ((0, 1 / 60), (50, 0.0)):
        evaluator = AvaEvaluator(files[0], tmp_path / "map.pbtxt", class_ids=[1], max_per_keyframe=cap)
        evaluator.process(["v1"], [902], [boxes], [scores])
        assert evaluator.evaluate().per_class[1] == pytest.approx(expected, abs=1e-15)
    with pytest.raises(ValueError, match="max_per_keyframe must be >= 0"):
        evaluate_ava_files(*files, tmp_path / "map.pbtxt", max_per_keyframe=-1)


def test_input_order_matches_as_evads_own_evaluation(tmp_path):
    """EVAD's own evaluation neither caps nor sorts: the earlier of two boxes on one person takes
    the hit, even when it scores lower. (Equal to EVAD's evaluation code on 1000 random cases.)"""
    loose = "0.1,0.1,0.4,0.58"  # IoU 0.6 with A
    (tmp_path / "map.pbtxt").write_text(LABELMAP)
    files = [
        write(tmp_path / "gt.csv", [f"v1,902,{A},1"]),
        write(tmp_path / "det.csv", [f"v1,902,{loose},1,0.3", f"v1,902,{A},1,0.9"]),
    ]
    assert evaluate_ava_files(*files, tmp_path / "map.pbtxt", max_per_keyframe=0).per_class[1] == 1.0
    result = evaluate_ava_files(*files, tmp_path / "map.pbtxt", max_per_keyframe=0, input_order=True)
    assert result.per_class[1] == 0.5  # the 0.9 box is a false positive ahead of the hit
    assert result.to_dict()["protocol"]["match_order"] == "input"
    evaluator = AvaEvaluator(
        files[0], tmp_path / "map.pbtxt", class_ids=[1], max_per_keyframe=0, input_order=True
    )
    boxes = np.array([[0.1, 0.1, 0.4, 0.58], [0.1, 0.1, 0.4, 0.9]])  # (2, 4) in query order
    evaluator.process(["v1"], [902], [boxes], [np.array([[0.3], [0.9]])])
    assert evaluator.evaluate().per_class[1] == 0.5
    with pytest.raises(ValueError, match="max_per_keyframe must be 0, got 50"):
        evaluate_ava_files(*files, tmp_path / "map.pbtxt", input_order=True)


def test_class_with_groundtruth_but_no_detections_scores_zero(tmp_path):
    result = score(tmp_path, [f"v1,902,{A},1", f"v1,902,{B},17"], [f"v1,902,{A},1,0.9"])
    assert result.per_class == {1: 1.0, 17: 0.0}
    assert result.mean_ap == 0.5
    assert result.groups == {"person_movement": 1.0, "object_manipulation": 0.0, "person_interaction": None}


def test_class_with_detections_but_no_groundtruth_is_left_out(tmp_path):
    det = [f"v1,902,{A},1,0.9", f"v1,902,{B},79,0.9"]
    result = score(tmp_path, [f"v1,902,{A},1"], det)
    assert result.per_class == {1: 1.0}
    assert result.mean_ap == 1.0


def test_classes_outside_the_label_map_are_dropped_with_a_warning(tmp_path):
    det = [f"v1,902,{A},1,0.9", f"v1,902,{A},5,0.99", f"v1,902,{A},5,0.98"]
    with pytest.warns(AvaInputWarning) as record:
        result = score(tmp_path, [f"v1,902,{A},1", f"v1,902,{A},80"], det)
    assert result.per_class == {1: 1.0}
    assert result.counts["unknown_class_rows"] == 2
    assert result.counts["groundtruth_unknown_class_rows"] == 1
    messages = [str(w.message) for w in record]
    assert any(re.search(r"gt.csv: 1 ground-truth rows .* \(ids 80, first at line 2\)", m) for m in messages)
    assert any(re.search(r"det.csv: 2 detection rows .* \(ids 5, first at line 2\)", m) for m in messages)


def test_ties_in_score(tmp_path):
    gt = [f"v1,902,{A},1", f"v1,902,{B},1"]
    # Tied hits behind a higher-scoring miss: FP, TP, TP in any tie order -> AP = 2/3.
    det = [f"v1,902,{A},1,0.8", f"v1,902,{B},1,0.8", f"v1,903,{A},1,0.9"]
    assert score(tmp_path, [*gt, "v1,903"], det).per_class[1] == pytest.approx(2 / 3, abs=1e-15)
    # Tied misses ahead of a hit: FP, FP, TP of 1 box -> AP = 1/3.
    det = [f"v1,902,{ELSEWHERE},1,0.9", f"v1,902,{B},1,0.9", f"v1,902,{A},1,0.5"]
    assert score(tmp_path, gt[:1], det).per_class[1] == pytest.approx(1 / 3, abs=1e-15)


def test_tied_hit_and_miss_rank_as_numpy_argsort_ranks_them(tmp_path):
    # A hit and a miss with equal scores; 1 box. The official reader's heap leaves the miss
    # (smaller y1) first, and the ranking is np.argsort(scores)[::-1] over [miss, hit].
    result = score(tmp_path, [f"v1,902,{A},1"], [f"v1,902,{A},1,0.7", f"v1,902,{ELSEWHERE},1,0.7"])
    hit_ranked_first = np.argsort(np.array([0.7, 0.7]))[::-1][0] == 1
    assert result.per_class[1] == (1.0 if hit_ranked_first else 0.5)


def test_keyframe_key_normalisation(tmp_path):
    assert keyframe_key("v1", "902") == keyframe_key("v1", "0902") == keyframe_key("v1", 902.0)
    assert keyframe_key("v1", " 902.0") == ("v1", "902.000000")
    det = [f"v1,902,{A},1,0.9", f"v1,902.0,{B},1,0.8", f"v1,0903,{A},12,0.7"]
    result = score(tmp_path, [f"v1,0902,{A},1", f"v1,902.000,{B},1", f"v1,903.0,{A},12"], det)
    assert result.per_class == {1: 1.0, 12: 1.0}


def test_detections_on_keyframes_absent_from_groundtruth_are_ignored(tmp_path):
    det = [f"v1,902,{A},1,0.5", f"v1,904,{B},1,0.9", f"v2,902,{B},1,0.9"]
    with pytest.warns(AvaInputWarning) as record:
        result = score(tmp_path, [f"v1,902,{A},1"], det)
    assert result.per_class[1] == 1.0
    messages = " | ".join(str(w.message) for w in record)
    assert (
        "1 detection rows (1 keyframes) are on videos absent from the ground truth, first at line 3"
        in messages
    )
    assert (
        "1 detection rows (1 keyframes) are on keyframes absent from the ground truth, first at line 2"
        in messages
    )
    assert result.counts["unknown_video_rows"] == result.counts["unknown_keyframe_rows"] == 1


@pytest.mark.parametrize("other_rows", [["v1,904"], [f"v1,904,{B},12"], [f"v1,904,{B},33"]])
def test_keyframes_in_groundtruth_without_a_box_of_the_class_make_false_positives(tmp_path, other_rows):
    # An empty keyframe, one with another class, one with a class outside the map: all "present".
    det = [f"v1,902,{A},1,0.5", f"v1,904,{B},1,0.9"]
    result = quiet_score(tmp_path, [f"v1,902,{A},1", *other_rows], det)
    assert result.per_class[1] == 0.5  # FP then TP of 1 box


def test_zero_width_detections_take_a_cap_slot_then_vanish(tmp_path):
    gt = [f"v1,902,{A},1"]
    flat = "0.3,0.1,0.3,0.9"  # x1 == x2
    result = score(tmp_path, gt, [f"v1,902,{flat},1,0.9", f"v1,902,{A},1,0.5"])
    assert result.per_class[1] == 1.0  # not a false positive
    assert result.counts["invalid_box_rows"] == 1
    result = score(tmp_path, gt, [f"v1,902,{flat},1,0.9"] * 50 + [f"v1,902,{A},1,0.5"])
    assert result.per_class[1] == 0.0  # but it kept the hit out of the 50


def test_boxes_in_pixels_warn(tmp_path):
    gt = [f"v1,902,{A},1"]
    with pytest.warns(
        AvaInputWarning, match=r"det.csv: every box has a coordinate above 1; .* look like pixels"
    ):
        result = score(tmp_path, gt, ["v1,902,32,24,128,216,1,0.9", "v1,902,0.1,0.1,160,0.9,1,0.8"])
    assert result.mean_ap == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", AvaInputWarning)  # one normalised box: no warning
        score(tmp_path, gt, ["v1,902,32,24,128,216,1,0.9", f"v1,902,{A},1,0.8"])


def test_detections_without_scores_or_with_person_ids_for_scores_warn(tmp_path):
    gt = [f"v1,902,{A},1", f"v1,903,{A},1"]
    with pytest.warns(
        AvaInputWarning, match=r"det.csv:2: 2 scores lie outside \[0, 1\] \(this one, 3, first\)"
    ):
        score(tmp_path, gt, [f"v1,902,{A},1,0", f"v1,903,{A},1,3", f"v1,903,{A},1,7"])  # a ground-truth file
    with pytest.warns(AvaInputWarning, match=r"det.csv: every detection scores 1.0 \(7-column rows"):
        result = score(tmp_path, gt, [f"v1,902,{A},1", f"v1,903,{A},1"])
    assert result.mean_ap == 1.0  # still scored, as officially
    with warnings.catch_warnings():
        warnings.simplefilter("error", AvaInputWarning)
        score(tmp_path, gt, [f"v1,902,{A},1,1", f"v1,903,{A},1,0.5"])


def test_inverted_boxes_are_dropped_with_a_warning_naming_the_first(tmp_path):
    gt = [f"v1,902,{A},1"]
    det = [f"v1,902,{A},1,0.5", "v1,902,0.4,0.1,0.1,0.9,1,0.9", "v1,902,0.1,0.9,0.4,0.1,1,0.8"]
    with pytest.warns(AvaInputWarning, match=r"det.csv:2: 2 boxes have x2 < x1 or y2 < y1"):
        result = score(tmp_path, gt, det)
    assert result.per_class[1] == 1.0  # as officially: they take no box and cost no precision


def test_groundtruth_formats(tmp_path):
    # 7 and 8 columns, a repeated box (two instances), a 2-column empty keyframe, CRLF, no final newline.
    (tmp_path / "gt.csv").write_bytes(f"v1,902,{A},1,3\r\nv1,902,{A},1\r\nv1,903\r\nv1,902,{B},17,4".encode())
    write(tmp_path / "det.csv", [f"v1,902,{A},1,0.9", f"v1,902,{B},17,0.9", f"v1,903,{A},17,0.95"])
    (tmp_path / "map.pbtxt").write_text(LABELMAP)
    with pytest.warns(AvaInputWarning, match="1 ground-truth rows repeat"):
        result = evaluate_ava_files(tmp_path / "gt.csv", tmp_path / "det.csv", tmp_path / "map.pbtxt")
    assert result.num_groundtruth == {1: 2, 17: 1}
    assert result.per_class == {1: 0.5, 17: 0.5}


def test_quoted_and_plain_files_read_alike(tmp_path):
    plain = write(tmp_path / "plain.csv", [f"v1,902,{A},1,0.9", "v1,0903", f"v2,903.5,{B},17,1e-3"])
    quoted = write(tmp_path / "quoted.csv", [f'"v1",902,{A},1,0.9', '"v1",0903', f'v2,"903.5",{B},17,1e-3'])
    first, second = read_detections(plain), read_detections(quoted)
    assert first.keys == second.keys == [("v1", "902.000000"), ("v1", "903.000000"), ("v2", "903.500000")]
    for name in ("row_key", "boxes", "labels", "scores", "lines"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    np.testing.assert_array_equal(first.lines, [1, 3])


@pytest.mark.parametrize("name", ["v1", "vidéo"], ids=["fast-reader", "csv-reader"])
def test_a_byte_order_mark_is_not_part_of_the_first_video_id(tmp_path, name):
    """Spreadsheet programs start UTF-8 CSVs with a byte-order mark."""
    rows = [f"{name},902,{A},1,0.9", f"{name},903,{B},17,0.5"]
    plain = write(tmp_path / "plain.csv", rows)
    marked = tmp_path / "marked.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    expected = [(name, "902.000000"), (name, "903.000000")]
    assert read_detections(marked).keys == read_detections(plain).keys == expected
    (tmp_path / "map.pbtxt").write_bytes(b"\xef\xbb\xbf" + LABELMAP.encode())
    assert read_labelmap(tmp_path / "map.pbtxt")[1] == "bend/bow (at the waist)"


@pytest.mark.parametrize("quoted", [False, True], ids=["fast-reader", "csv-reader"])
@pytest.mark.parametrize(
    ("row", "message"),
    [
        (f"v1,902,{A},1,0.9,7", "expected 2, 7 or 8 comma-separated columns, found 9 columns"),
        ("", "expected 2, 7 or 8 comma-separated columns, found an empty line"),
        ("v1,902,abc,0.1,0.4,0.9,1,0.9", "column 3 (x1) 'abc' is not a number"),
        ("v1,902,0.1,0.1,0.4,,1,0.9", "column 6 (y2) '' is not a number"),
        (f"v1,902,{A},1.5,0.9", "column 7 (action_id) '1.5' is not an integer"),
        (f"v1,902,{A},1,high", "column 8 (score) 'high' is not a number"),
        (f"v1,902,{A},1,nan", "column 8 (score) 'nan' is not"),
        (f"v1,second,{A},1,0.9", "column 2 (second) 'second' is not a finite number"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, quoted, row, message):
    first = f'"v1",902,{A},1,0.5' if quoted else f"v1,902,{A},1,0.5"
    path = write(tmp_path / "det.csv", [first, f"v1,903,{A},1,0.5", row, f"v1,904,{A},1,0.5"])
    with pytest.raises(UserError, match="^" + re.escape(f"{path}:3: ")) as err:
        read_detections(path)
    assert message in str(err.value)


def test_unreadable_text_names_the_line_where_it_starts(tmp_path):
    path = tmp_path / "det.csv"
    path.write_bytes(f"v1,902,{A},1,0.5\nv1,903,{A},1,0.5\xff\nv1,904,{A},1,0.5\n".encode("latin-1"))
    with pytest.raises(UserError, match="^" + re.escape(f"{path}:2: not UTF-8 text")):
        read_detections(path)
    # A quote opened on line 2 and never closed: the row starts on line 2, not where it ends.
    write(path, [f"v1,902,{A},1,0.5", f'v1,903,"{A},1,0.5', f"v1,904,{A},1,0.5"])
    with pytest.raises(UserError, match="^" + re.escape(f"{path}:2: ")):
        read_detections(path)


def test_bad_label_maps(tmp_path):
    path = tmp_path / "map.pbtxt"
    path.write_text('label {\n  name: "stand"\n  label_type: PERSON_MOVEMENT\n}\n')
    with pytest.raises(UserError, match=re.escape(f"{path}: label map has no class ids")):
        read_labelmap(path)
    path.write_text('item {\n  name: "stand"\n  id: zero\n}\n')
    with pytest.raises(UserError, match=re.escape(f"{path}:3: class id 'zero' is not an integer")):
        read_labelmap(path)
    path.write_text('item {\n  name: "stand"\n  id: 0\n}\n')
    with pytest.raises(UserError, match=re.escape(f"{path}:3: class id 0 is below 1")):
        read_labelmap(path)
    # An id beyond int64 failed with OverflowError when the scoring made its class-id array.
    path.write_text('item {\n  name: "stand"\n  id: 99999999999999999999999\n}\n')
    with pytest.raises(
        UserError, match=re.escape(f"{path}:3: class id 99999999999999999999999 is too large")
    ):
        read_labelmap(path)
    path.write_text('item {\n    name: "a"\n    id: 3\n    display_name: "A"\n}\n')  # any indentation
    assert read_labelmap(path) == {3: "a"}
    # An id without a name of its own used to take the previous item's name.
    path.write_text('item {\n  name: "stand"\n  id: 1\n}\nitem {\n  id: 51\n}\n')
    with pytest.raises(UserError, match=re.escape(f"{path}:6: class id 51 has no name")):
        read_labelmap(path)
    # Protobuf text on one line, comments, and a name holding "id:" read as they say.
    path.write_text('# AVA subset\nitem { name: "stand" id: 1 }\nitem { name: "hold id: 9" label_id: 2 }\n')
    assert read_labelmap(path) == {1: "stand", 2: "hold id: 9"}


def test_groundtruth_errors(tmp_path):
    with pytest.raises(UserError, match="no ground-truth boxes of the label map's classes"):
        quiet_score(tmp_path, [f"v1,902,{A},33"], [])
    with pytest.raises(UserError, match=r"gt.csv:2: ground-truth box has x2 < x1"):
        score(tmp_path, [f"v1,902,{A},1", "v1,902,0.5,0.1,0.4,0.9,1"], [])
    with pytest.raises(UserError, match="cannot read"):
        evaluate_ava_files(tmp_path / "missing.csv", tmp_path / "gt.csv", tmp_path / "map.pbtxt")


def test_evaluator_matches_the_file_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    gt_rows, boxes, scores = [], [], []
    for k in range(6):
        people = rng.uniform(0, 0.5, (3, 2))
        people = np.concatenate([people, people + rng.uniform(0.2, 0.5, (3, 2))], axis=1)  # (3, 4)
        gt_rows += [
            f"v1,{902 + k},{','.join(map(repr, p.tolist()))},{[1, 12, 17][i]}" for i, p in enumerate(people)
        ]
        boxes.append(np.clip(people + rng.normal(0, 0.05, people.shape), 0, 1))
        scores.append(rng.random((3, 80)))
    (tmp_path / "map.pbtxt").write_text(LABELMAP)
    write(tmp_path / "gt.csv", gt_rows)
    evaluator = AvaEvaluator(tmp_path / "gt.csv", tmp_path / "map.pbtxt", exclusions=[("v1", 907)])
    evaluator.process(["v1"] * 3, [902, "903", 904.0], boxes[:3], scores[:3])
    evaluator.process(["v1"] * 3, [905, 906, 907], boxes[3:], scores[3:])
    with pytest.warns(AvaInputWarning, match="outside the label map"):
        in_memory = evaluator.evaluate()
    assert in_memory.counts["excluded_rows"] == 3 * 4
    write_detections_csv(tmp_path / "det.csv", evaluator.detections())
    write(tmp_path / "excl.csv", ["v1,907"])
    with pytest.warns(AvaInputWarning):
        from_file = evaluate_ava_files(
            tmp_path / "gt.csv", tmp_path / "det.csv", tmp_path / "map.pbtxt", tmp_path / "excl.csv"
        )
    assert in_memory == from_file
    assert 0 < in_memory.mean_ap < 1
    evaluator.reset()
    with pytest.warns(AvaInputWarning, match="no detections"):
        assert evaluator.evaluate().mean_ap == 0.0


def test_evaluator_takes_tensors_and_checks_shapes(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "map.pbtxt").write_text(LABELMAP)
    write(tmp_path / "gt.csv", [f"v1,902,{A},1", f"v1,902,{B},17"])
    evaluator = AvaEvaluator(tmp_path / "gt.csv", tmp_path / "map.pbtxt", class_ids=[1, 17])
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.9], [0.5, 0.1, 0.9, 0.9]])
    evaluator.process(["v1"], [torch.tensor(902)], [boxes], [torch.tensor([[0.9, 0.1], [0.2, 0.8]])])
    result = evaluator.evaluate()
    assert result.per_class == {1: 1.0, 17: 1.0}
    assert result.num_detections == {1: 2, 17: 2}
    with pytest.raises(ValueError, match="scores must be"):
        evaluator.process(["v1"], [902], [boxes], [torch.zeros(3, 2)])
    with pytest.raises(ValueError, match="class_ids has 2"):
        evaluator.process(["v1"], [902], [boxes], [torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="not a number"):
        evaluator.process(["v1"], ["9o2"], [boxes], [torch.zeros(2, 2)])


def test_evaluator_takes_bfloat16_tensors(tmp_path):
    # What post-processing returns for a model run under bf16 autocast; numpy has no bfloat16.
    torch = pytest.importorskip("torch")
    (tmp_path / "map.pbtxt").write_text(LABELMAP)
    write(tmp_path / "gt.csv", [f"v1,902,{A},1", f"v1,902,{B},17"])
    evaluator = AvaEvaluator(tmp_path / "gt.csv", tmp_path / "map.pbtxt", class_ids=[1, 17])
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.9], [0.5, 0.1, 0.9, 0.9]], dtype=torch.bfloat16)
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.bfloat16)
    evaluator.process(["v1"], [torch.tensor(902)], [boxes], [scores])
    assert evaluator.evaluate().per_class == {1: 1.0, 17: 1.0}
    assert evaluator.detections().scores.tolist() == scores.double().reshape(-1).tolist()


@pytest.mark.parametrize(
    ("boxes", "scores", "message"),
    [
        (np.full((2, 5), 0.5), np.zeros((2, 2)), r"boxes must be \(P, 4\) .* got \(2, 5\)"),
        (np.full((4, 5), 0.5), np.zeros((5, 2)), r"boxes must be \(P, 4\) .* got \(4, 5\)"),
        (np.full(8, 0.5), np.zeros((2, 2)), r"boxes must be \(P, 4\) .* got \(8,\)"),
        (np.array([[0.1, np.nan, 0.4, 0.9]]), np.zeros((1, 2)), "must be finite"),
        (np.array([[0.1, 0.1, 0.4, 0.9]]), np.array([[np.nan, 0.5]]), "must be finite"),
    ],
)
def test_evaluator_names_boxes_of_another_shape_and_nan(tmp_path, boxes, scores, message):
    """(4, 5) boxes with 5 rows of scores were silently read as five boxes, (2, 5) ended in a reshape
    error and NaN was scored (the CSV reader refuses it)."""
    (tmp_path / "map.pbtxt").write_text(LABELMAP)
    write(tmp_path / "gt.csv", [f"v1,902,{A},1"])
    evaluator = AvaEvaluator(tmp_path / "gt.csv", tmp_path / "map.pbtxt", class_ids=[1, 17])
    with pytest.raises(ValueError, match="keyframe v1, 902: .*" + message):
        evaluator.process(["v1"], [902], [boxes], [scores])
    evaluator.process(["v1"], [902], [np.zeros(0)], [np.zeros((0, 2))])  # no boxes on a keyframe
    evaluator.process(["v1"], [903], [np.zeros(0)], [np.zeros(0)])  # as empty 1-D arrays, like boxes
    with pytest.raises(ValueError, match=r"keyframe v1, 904: scores must be \(P, C\) for P = 0 boxes"):
        evaluator.process(["v1"], [904], [np.zeros(0)], [np.zeros((1, 2))])
    with pytest.warns(AvaInputWarning, match="no detections; every class scores AP 0"):
        assert evaluator.evaluate().mean_ap == 0.0


def test_a_label_map_keyed_by_strings_is_named(tmp_path):
    write(tmp_path / "gt.csv", [f"v1,902,{A},1"])
    with pytest.raises(ValueError, match="label map's keys must be integer class ids, got '1'"):
        AvaEvaluator(tmp_path / "gt.csv", {"1": "stand"})


def test_mean_over_a_label_map_with_class_id_0_given_as_a_dict(tmp_path):
    # A .pbtxt may not hold id 0, a dict may: the mean is still over the classes with ground truth.
    write(tmp_path / "gt.csv", [f"v1,902,{A},0", f"v1,902,{B},1"])
    evaluator = AvaEvaluator(tmp_path / "gt.csv", {0: "stand", 1: "sit"}, class_ids=[0, 1])
    evaluator.process(["v1"], [902], [np.array([[0.1, 0.1, 0.4, 0.9]])], [np.array([[0.9, 0.8]])])
    result = evaluator.evaluate()
    assert result.per_class == {0: 1.0, 1: 0.0}
    assert result.mean_ap == 0.5


@pytest.fixture
def cli_main(monkeypatch):
    """`evad.cli.main` with the `evaluate` command group registered."""
    import evad.cli

    monkeypatch.setattr(
        evad.cli, "_COMMAND_MODULES", tuple(dict.fromkeys((*evad.cli._COMMAND_MODULES, "evaluate")))
    )
    return evad.cli.main


def test_cli_end_to_end(tmp_path, capsys, cli_main):
    (tmp_path / "map.pbtxt").write_text(LABELMAP)
    write(tmp_path / "gt.csv", [f"v1,902,{A},1", f"v1,902,{B},17"])
    write(tmp_path / "det.csv", [f"v1,902,{A},1,0.9", f"v1,902,{A},5,0.9"])
    out = tmp_path / "metrics.json"
    args = [
        "evaluate",
        "ava",
        "--groundtruth",
        str(tmp_path / "gt.csv"),
        "--detections",
        str(tmp_path / "det.csv"),
    ]
    args += ["--labelmap", str(tmp_path / "map.pbtxt"), "--json", str(out)]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    assert "frame-mAP @ IoU 0.5:  50.00 %" in captured.out
    assert "bend/bow (at the waist)   100.00" in captured.out
    assert "evad: warning:" in captured.err and "outside the label map" in captured.err
    metrics = json.loads(out.read_text())
    assert metrics["mAP"] == 0.5
    assert metrics["per_class"] == {"1": 1.0, "17": 0.0}
    assert metrics["groups"] == {
        "person_movement": 1.0,
        "object_manipulation": 0.0,
        "person_interaction": None,
    }

    out.write_text("keep me")
    assert cli_main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert cli_main([*args, "--overwrite"]) == 0
    assert json.loads(out.read_text())["mAP"] == 0.5
    assert list(tmp_path.glob(".metrics.json.*")) == []  # no temporary file left behind

    assert cli_main([*args, "--overwrite", "--max-per-keyframe", "0"]) == 0
    assert json.loads(out.read_text())["protocol"]["max_detections_per_keyframe"] == 0
    assert cli_main([*args, "--overwrite", "--input-order"]) == 2
    assert "add --max-per-keyframe 0" in capsys.readouterr().err
    assert cli_main([*args, "--overwrite", "--input-order", "--max-per-keyframe", "0"]) == 0
    assert json.loads(out.read_text())["protocol"]["match_order"] == "input"

    write(tmp_path / "det.csv", [f"v1,902,{A},1,0.9", "v1,902,0.1"])
    assert cli_main([*args, "--overwrite"]) == 2
    assert f"{tmp_path / 'det.csv'}:2: expected 2, 7 or 8" in capsys.readouterr().err

    # An output that is also an input is refused even with --overwrite: one typo would destroy it.
    swapped = [*args[:-1], str(tmp_path / "det.csv"), "--overwrite"]
    assert cli_main(swapped) == 2
    assert "det.csv: is also one of this command's inputs" in capsys.readouterr().err
    assert (tmp_path / "det.csv").read_text().startswith("v1,902")


def test_cli_json_and_plot_may_not_name_one_file(tmp_path, capsys, cli_main):
    args = ["evaluate", "ava", "--groundtruth", "gt.csv", "--detections", "det.csv", "--labelmap", "m.pbtxt"]
    same = tmp_path / "same.png"
    assert cli_main([*args, "--json", str(same), "--plot", str(tmp_path / "." / "same.png")]) == 2
    assert f"{same} and {tmp_path / '.' / 'same.png'} name the same output file" in capsys.readouterr().err
    assert not same.exists()


def test_cli_plot_refuses_other_formats_before_scoring(tmp_path, capsys, cli_main):
    args = ["evaluate", "ava", "--groundtruth", str(tmp_path / "absent.csv"), "--detections", "absent.csv"]
    args += ["--labelmap", "absent.pbtxt", "--plot", str(tmp_path / "ap.gif")]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "ap.gif: the chart is written as PNG; give a .png file name" in err and "absent" not in err
    assert not (tmp_path / "ap.gif").exists()


def test_cli_plot(tmp_path, cli_main):
    pytest.importorskip("matplotlib")
    (tmp_path / "map.pbtxt").write_text(LABELMAP)
    write(tmp_path / "gt.csv", [f"v1,902,{A},1", f"v1,902,{B},17"])
    write(tmp_path / "det.csv", [f"v1,902,{A},1,0.9", f"v1,902,{B},17,0.9"])
    (tmp_path / "old.json").write_text(json.dumps({"mAP": 0.25, "per_class": {"1": 0.5, "17": 0.0}}))
    args = [
        "evaluate",
        "ava",
        "--groundtruth",
        str(tmp_path / "gt.csv"),
        "--detections",
        str(tmp_path / "det.csv"),
    ]
    args += ["--labelmap", str(tmp_path / "map.pbtxt"), "--plot", str(tmp_path / "ap.png")]
    assert cli_main([*args, "--compare", str(tmp_path / "old.json")]) == 0
    assert (tmp_path / "ap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad.json").write_text("{}")
    assert cli_main([*args, "--overwrite", "--compare", str(tmp_path / "bad.json")]) == 2


def test_repeated_groundtruth_rows_count_twice_with_a_warning(tmp_path):
    gt = [f"v1,902,{A},1,0", f"v1,902,{B},1,1", f"v1,902,{A},1,2", f"v1,902,{A},12,0"]
    with pytest.warns(AvaInputWarning, match=r"gt.csv: 1 ground-truth rows repeat .*, first at line 3"):
        result = score(tmp_path, gt, [f"v1,902,{A},1,0.9", f"v1,902,{B},1,0.8", f"v1,902,{A},12,0.7"])
    assert result.per_class[1] == pytest.approx(2 / 3)  # the repeated box is never found
    assert result.per_class[12] == 1.0


def test_a_class_id_beyond_int64_is_named_as_such(tmp_path):
    # It was shown as the reader's stand-in, "ids -9223372036854775808".
    with pytest.warns(AvaInputWarning, match=r"outside the label map \(ids beyond int64, first at line 2"):
        score(tmp_path, [f"v1,902,{A},1", f"v1,902,{B},99999999999999999999"], [f"v1,902,{A},1,0.9"])


def test_input_warnings_point_at_the_callers_line(tmp_path):
    with pytest.warns(AvaInputWarning, match="outside the label map") as record:
        score(tmp_path, [f"v1,902,{A},1"], [f"v1,902,{A},5,0.9"])
    assert {w.filename for w in record} == {__file__}
