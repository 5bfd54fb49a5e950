"""detect_video and `evad detect` with the tiny random model on tiny videos."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch

import evad
from evad.cli import detect as detect_cli
from evad.errors import UserError
from evad.inference import VideoDecodeWarning, detect_video
from evad.inference.clips import KeyframeClip
from evad.inference.preprocess import clips_to_batch
from evad.inference.results import OUTPUT_FILES

NAMES, IDS = ["stand", "sit", "walk"], [1, 2, 5]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return evad.create_model("tiny", num_classes=len(IDS))


def _detect(model, video, out, **kwargs):
    kwargs = {"person_threshold": 0.0, "short_side": 64, "video_min_side": 0, "progress": False, **kwargs}
    return detect_video(model, video, out, NAMES, IDS, **kwargs)


def _read_back(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return stream.average_rate, stream.codec_context.name, frames


def test_writes_csv_json_and_an_annotated_video_like_the_input(model, video, tmp_path):
    out = tmp_path / "out"
    result = _detect(model, video, out, action_threshold=0.3)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)  # no temporary files left
    assert result.num_frames == 70 and result.codec == "libx264" and not result.truncated

    rate, codec, frames = _read_back(result.video_path)
    assert (rate, codec, len(frames), frames[0].shape) == (30, "h264", 70, (64, 80, 3))

    doc = json.loads(result.json_path.read_text())
    assert [k["frame"] for k in doc["keyframes"]] == [0, 30, 60]
    assert [k["time"] for k in doc["keyframes"]] == [0.0, 1.0, 2.0]
    assert doc["classes"] == [{"id": i, "name": n} for i, n in zip(IDS, NAMES, strict=True)]
    detections = [d for k in doc["keyframes"] for d in k["detections"]]
    assert len(detections) == result.num_detections == 3 * 10  # threshold 0: every proposal of the tiny model
    for d in detections:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 80 and 0 <= y1 <= y2 <= 64
        # the pixel box is rounded to 0.01, the normalised one is not rounded from it
        assert d["box_normalized"] == pytest.approx([x1 / 80, y1 / 64, x2 / 80, y2 / 64], abs=1e-4)
        assert d["track_id"] >= 1 and 0 <= d["person_score"] <= 1
        scores = [a["score"] for a in d["actions"]]
        assert scores == sorted(scores, reverse=True) and all(s >= 0.3 for s in scores)
        assert {a["id"] for a in d["actions"]} <= set(IDS)

    rows = list(csv.reader(result.csv_path.open()))
    assert len(rows) == result.num_detections * len(IDS)  # every class of every box
    assert {r[0] for r in rows} == {"clip"} and {float(r[1]) for r in rows} == {0.0, 1.0, 2.0}
    assert {int(r[6]) for r in rows} == set(IDS)
    assert all(0 <= float(v) <= 1 for r in rows for v in r[2:6] + r[7:])
    # The two files give the same normalised box, not one rounded from the other's pixels.
    csv_boxes = [[float(v) for v in r[2:6]] for r in rows[:: len(IDS)]]  # one row per box
    assert csv_boxes == [d["box_normalized"] for d in detections]


def test_a_loaded_model_detects_with_its_own_settings(model, video, tmp_path):
    """`LoadedModel.detect` runs at the model's input size and threshold, as `evad detect` does;
    the keep rate recorded is the one used, also when the model's default was."""
    from evad.inference import InputSettings, LoadedModel

    loaded = LoadedModel(model, IDS, NAMES, InputSettings(short_side=32), person_threshold=0.0)
    result = loaded.detect(video, tmp_path / "own", progress=False)
    doc = json.loads(result.json_path.read_text())
    assert doc["person_threshold"] == 0.0 and doc["keep_rate"] == model.backbone.keep_rate
    assert result.num_detections == 3 * 10  # threshold 0: every proposal
    same = _detect(model, video, tmp_path / "by_hand", short_side=32)
    assert same.csv_path.read_text().replace("by_hand", "own") == result.csv_path.read_text()
    higher = loaded.detect(video, tmp_path / "higher", person_threshold=1.0, progress=False)
    assert higher.num_detections == 0  # an option overrides the model's setting


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_model_cast_to_half_precision_detects(model, video, tmp_path, dtype):
    """detect_video makes its clips in the model's dtype: after model.half() it failed with
    'clips must be normalised floats in the model's dtype torch.float16, got torch.float32'."""
    import copy

    half = copy.deepcopy(model).to(dtype)
    result = _detect(half, video, tmp_path / "half")
    assert result.num_detections == 3 * 10  # threshold 0: every proposal
    assert all(
        kf.boxes.dtype == np.float32 and kf.action_scores.dtype == np.float32 for kf in result.keyframes
    )


def test_boxes_are_drawn_and_held_until_the_next_keyframe(model, video, tmp_path):
    result = _detect(model, video, tmp_path / "out", stride=20)
    assert [k.frame for k in result.keyframes] == [0, 20, 40, 60]
    _, _, frames = _read_back(result.video_path)
    grey = np.full((64, 80, 3), 3, np.uint8) * np.arange(70)[:, None, None, None].astype(np.uint8)
    changed = [np.abs(f.astype(int) - g).max() > 40 for f, g in zip(frames, grey, strict=True)]
    assert all(changed)  # every frame carries the boxes of its latest keyframe


def test_existing_results_without_overwrite_fail_before_the_model_runs(model, video, tmp_path):
    out = tmp_path / "out"
    _detect(model, video, out)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(UserError, match="already holds"):
            _detect(model, video, out)
    finally:
        handle.remove()
    assert calls == []
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    _detect(model, video, out, overwrite=True)  # allowed when asked


def test_bad_inputs_are_user_errors_and_create_nothing(model, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    for path, message in [(tmp_path / "missing.mp4", "no such video file"), (text, "not a readable video")]:
        with pytest.raises(UserError, match=message):
            _detect(model, path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"action_threshold": 1.5}, ValueError, r"action_threshold must be in \[0, 1\], got 1.5"),
        ({"action_threshold": -1}, ValueError, r"action_threshold must be in \[0, 1\], got -1"),
        ({"max_long_side": 0}, ValueError, "short_side and max_long_side must be >= 1 pixel"),
        ({"mean": (0.4, 0.4)}, ValueError, "mean and std must be 3 values of RGB"),
        ({"std": (0, 0, 0)}, ValueError, "mean and std must be 3 values of RGB"),
        ({"mean": (114, 114, 114), "std": (57, 57, 57)}, ValueError, r"RGB in \[0, 1\]"),
        ({"device": "gpu"}, ValueError, "device must be cpu, cuda or cuda:N, got 'gpu'"),
        ({"device": "cuda:99"}, UserError, "device cuda:99: "),
    ],
)
def test_bad_options_are_named_before_the_model_runs(model, video, tmp_path, options, error, message):
    """A threshold outside [0, 1] or a long side of 0 was silently used, 255-scale normalisation
    gave garbage scores, two means ended in a view error, a zero std in an index error inside
    RoIAlign and an unknown device in torch's list of device types."""
    with pytest.raises(error, match=message):
        _detect(model, video, tmp_path / "out", **options)
    with pytest.raises(TypeError, match="model must be an EVAD detector, got str"):
        _detect("tiny", video, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_video_gives_results_for_the_frames_it_has(model, make_video, tmp_path):
    path = make_video(tmp_path / "full.mp4", num_frames=60, noise=True, faststart=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(VideoDecodeWarning):
        result = _detect(model, cut, tmp_path / "out")
    assert result.truncated and 0 < result.num_frames < 60
    assert len(_read_back(result.video_path)[2]) == result.num_frames
    assert json.loads(result.json_path.read_text())["truncated"] is True


def test_odd_sized_video_keeps_its_resolution(model, make_video, tmp_path):
    path = make_video(tmp_path / "odd.mp4", num_frames=12, size=(45, 61))
    result = _detect(model, path, tmp_path / "out")
    _, _, frames = _read_back(result.video_path)
    assert len(frames) == 12 and frames[0].shape == (45, 61, 3)


def test_a_rotated_video_is_detected_and_annotated_as_it_is_shown(model, make_video, tmp_path):
    """A portrait phone video (64 x 80 frames stored sideways, rotation 90): the model sees it
    upright, boxes are in the shown 80 x 64 frame and the annotated video is upright."""
    path = make_video(tmp_path / "portrait.mp4", num_frames=12, size=(64, 80), rotation=90)
    result = _detect(model, path, tmp_path / "out", stride=6)
    document = json.loads(result.json_path.read_text())
    assert (document["height"], document["width"]) == (80, 64)
    boxes = np.concatenate([kf.boxes for kf in result.keyframes])
    assert len(boxes) and (boxes[:, [0, 2]] <= 64).all() and (boxes[:, [1, 3]] <= 80).all()
    _, _, frames = _read_back(result.video_path)
    assert len(frames) == 12 and frames[0].shape == (80, 64, 3)


def test_small_videos_are_annotated_enlarged_with_boxes_in_input_pixels(model, video, tmp_path):
    """By default the annotated video of a 64 x 80 input is 6 times larger (short side >= 360), the
    boxes are drawn where they are in the enlarged frame, and the CSV / JSON are unchanged."""
    native = _detect(model, video, tmp_path / "native", stride=20)
    big = _detect(model, video, tmp_path / "big", stride=20, video_min_side=360)
    assert (native.video_scale, big.video_scale) == (1, 6)
    assert json.loads(big.json_path.read_text())["video_scale"] == 6
    assert big.csv_path.read_text() == native.csv_path.read_text()
    _, _, frames = _read_back(big.video_path)
    assert len(frames) == 70 and frames[0].shape == (384, 480, 3)
    grey = 3 * 20  # frame 20: a keyframe, flat grey of level 60
    drawn = np.abs(frames[20].astype(int) - grey).max(axis=2) > 40  # (384, 480) box and label pixels
    boxes = 6 * big.keyframes[1].boxes
    for x1, y1, x2, y2 in boxes.round().astype(int):  # both side edges drawn at 6x the input pixels
        assert drawn[(y1 + y2) // 2, max(x1 - 2, 0) : x1 + 3].any()
        assert drawn[(y1 + y2) // 2, max(x2 - 2, 0) : x2 + 3].any()


def test_annotation_scale_is_the_smallest_whole_factor_reaching_the_short_side():
    from evad.inference.annotate import annotation_scale

    assert annotation_scale(128, 171, 360) == 3
    assert annotation_scale(64, 80, 360) == 6
    assert annotation_scale(45, 61, 360) == 8
    assert annotation_scale(720, 1280, 360) == 1
    assert annotation_scale(100, 100, 0) == 1


def test_falls_back_to_mpeg4_without_h264(model, make_video, tmp_path, monkeypatch):
    from evad.inference import annotate

    monkeypatch.setattr(annotate, "has_libx264", lambda: False)
    # MPEG-TS input: its 1/90000 time base does not fit MPEG-4 part 2 and must be replaced.
    path = make_video(tmp_path / "v.ts", num_frames=12, size=(45, 61), container_format="mpegts")
    with pytest.warns(UserWarning, match="no H.264 encoder"):
        result = _detect(model, path, tmp_path / "out")
    rate, codec, frames = _read_back(result.video_path)
    assert (result.codec, codec, rate, len(frames), frames[0].shape) == (
        "mpeg4",
        "mpeg4",
        30,
        12,
        (45, 61, 3),
    )


def test_clips_are_normalised_and_padded_to_a_multiple_of_32():
    frames = np.full((16, 40, 50, 3), 255, np.uint8)
    batch = clips_to_batch([KeyframeClip(0, 0.0, 0.0, (0,) * 16, frames)], (0.45,) * 3, (0.225,) * 3)
    assert batch.shape == (1, 3, 16, 64, 64)
    assert batch[0, :, :, :40, :50].allclose(torch.tensor((1 - 0.45) / 0.225))
    assert batch[0, :, :, 40:].abs().max() == 0 and batch[0, :, :, :, 50:].abs().max() == 0


def _cli(argv):
    parser = argparse.ArgumentParser()
    detect_cli.register(parser.add_subparsers())
    args = parser.parse_args(["detect", *argv])
    return args.func(args)


def test_cli_writes_one_subfolder_per_video(make_video, tmp_path, capsys):
    a = make_video(tmp_path / "a.mp4", num_frames=8)
    b = make_video(tmp_path / "b.mp4", num_frames=8)
    common = ["--model", "tiny", "--num-classes", "2", "--short-side", "32", "--no-progress"]
    assert _cli([str(a), str(b), "--out", str(tmp_path / "out"), *common]) == 0
    for stem in ("a", "b"):
        assert sorted(p.name for p in (tmp_path / "out" / stem).iterdir()) == sorted(OUTPUT_FILES)
    assert "random weights" in capsys.readouterr().err
    with pytest.raises(UserError, match="already holds"):
        _cli([str(a), "--out", str(tmp_path / "out" / "a"), *common])
    with pytest.raises(UserError, match="share the output folder"):
        _cli([str(a), str(tmp_path / "x" / "a.mp4"), "--out", str(tmp_path / "o"), *common])


def test_cli_runs_a_trained_checkpoint_with_its_classes(make_video, tmp_path):
    from evad.config import config_from_dict
    from evad.engine.checkpoint import model_state, save_checkpoint

    config = config_from_dict({"model": {"preset": "tiny"}, "data": {"test_short_side": 32}}, "test")
    torch.manual_seed(0)
    model = evad.create_model("tiny", num_classes=2)
    dataset = {"num_classes": 2, "class_ids": [4, 9], "class_names": ["walk", "turn around"]}
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": model_state(model), "config": config.to_dict(), "dataset": dataset})
    video = make_video(tmp_path / "a.mp4", num_frames=8)
    out = tmp_path / "out"
    args = [
        str(video),
        "--checkpoint",
        str(path),
        "--out",
        str(out),
        "--no-progress",
        "--person-threshold",
        "0",
    ]
    assert _cli(args) == 0
    result = json.loads((out / "detections.json").read_text())
    assert [c["id"] for c in result["classes"]] == [4, 9]
    assert [c["name"] for c in result["classes"]] == ["walk", "turn around"]
    with open(out / "detections.csv") as f:
        assert {int(row[6]) for row in csv.reader(f)} == {4, 9}
    save_checkpoint(tmp_path / "weights.pt", {"model": model_state(model)})  # weights only
    with pytest.raises(UserError, match="not a checkpoint of `evad train`"):
        _cli([str(video), "--checkpoint", str(tmp_path / "weights.pt"), "--out", str(tmp_path / "o2")])


@pytest.mark.parametrize(
    ("trained_with", "given", "used"), [(0.25, None, 0.25), (None, None, 0.7), (0.25, "0.5", 0.5)]
)
def test_cli_person_threshold_defaults_to_the_checkpoints(make_video, tmp_path, trained_with, given, used):
    """A run evaluated with eval.person_threshold=X detects with X unless --person-threshold says."""
    from evad.config import config_from_dict
    from evad.engine.checkpoint import model_state, save_checkpoint

    settings = {"model": {"preset": "tiny"}, "data": {"test_short_side": 32}}
    if trained_with is not None:
        settings["eval"] = {"person_threshold": trained_with}
    config = config_from_dict(settings, "test")
    model = evad.create_model("tiny", num_classes=2)
    dataset = {"num_classes": 2, "class_ids": [4, 9], "class_names": ["walk", "turn around"]}
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": model_state(model), "config": config.to_dict(), "dataset": dataset})
    video = make_video(tmp_path / "a.mp4", num_frames=8)
    args = [str(video), "--checkpoint", str(path), "--out", str(tmp_path / "out"), "--no-progress"]
    assert _cli(args if given is None else [*args, "--person-threshold", given]) == 0
    assert json.loads((tmp_path / "out" / "detections.json").read_text())["person_threshold"] == used


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--device", "tpu"], "must be cpu, cuda or cuda:N, got tpu"),
        (["--rate", "inf"], "must be a finite number > 0"),
    ],
)
def test_cli_rejects_unknown_devices_and_infinite_rates_in_one_line(video, tmp_path, capsys, option, message):
    with pytest.raises(SystemExit) as exit_info:
        _cli([str(video), "--model", "tiny", "--out", str(tmp_path / "out"), *option])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]


def test_cli_never_replaces_an_input_video_even_with_overwrite(video, tmp_path):
    out = tmp_path / "out"
    (out / "clip").mkdir(parents=True)
    previous = out / "annotated.mp4"  # an earlier run's result, given as the input
    other = out / "clip" / "annotated.mp4"  # where the results of `video` (clip.mp4) would go
    for path in (previous, other):
        path.write_bytes(video.read_bytes())
    argv = ["--model", "tiny", "--num-classes", "2", "--out", str(out), "--overwrite", "--no-progress"]
    for videos in ([previous], [video, other]):
        with pytest.raises(UserError, match="the input video would be replaced by"):
            _cli([*map(str, videos), *argv])
    assert previous.read_bytes() == other.read_bytes() == video.read_bytes()


def test_cli_video_min_side_sets_the_annotated_size(make_video, tmp_path, capsys):
    path = make_video(tmp_path / "a.mp4", num_frames=8)  # 64 x 80
    common = [str(path), "--model", "tiny", "--num-classes", "2", "--short-side", "32", "--no-progress"]
    for min_side, shape in [(None, (384, 480, 3)), ("100", (128, 160, 3)), ("0", (64, 80, 3))]:
        out = tmp_path / f"out{min_side}"
        option = [] if min_side is None else ["--video-min-side", min_side]
        assert _cli([*common, "--out", str(out), *option]) == 0
        assert _read_back(out / "annotated.mp4")[2][0].shape == shape
    with pytest.raises(SystemExit):
        _cli([*common, "--video-min-side", "-1"])
    assert "--video-min-side: must be >= 0, got -1" in capsys.readouterr().err
    # far past 8K: OpenCV ran out of memory drawing the first frame, with a traceback
    with pytest.raises(UserError, match=r"a\.mp4: video_min_side must be in \[0, 4320\], got 100000"):
        _cli([*common, "--out", str(tmp_path / "huge"), "--video-min-side", "100000"])
    assert not (tmp_path / "huge").exists()


def test_cli_warnings_are_one_line_each(make_video, tmp_path, capsys):
    from evad.cli import main

    path = make_video(tmp_path / "full.mp4", num_frames=40, noise=True, faststart=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    argv = [str(cut), "--model", "tiny", "--num-classes", "2", "--short-side", "32", "--no-progress"]
    assert main(["detect", *argv, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert all(line.startswith("evad: warning: ") for line in err), err
    assert any("cut.mp4: decoded" in line for line in err)


def test_the_device_option_takes_a_numbered_gpu():
    import argparse

    from evad.cli.arguments import device

    assert [device(d) for d in ("cpu", "cuda", "cuda:1")] == ["cpu", "cuda", "cuda:1"]
    for bad in ("tpu", "cuda:x", "cuda:"):
        with pytest.raises(argparse.ArgumentTypeError, match="cpu, cuda or cuda:N"):
            device(bad)


def _clip_frame_numbers(model, run):
    """Frame number shown by each clip frame the model is given while `run()` runs: (keyframes, T)."""
    seen = []
    handle = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    try:
        result = run()
    finally:
        handle.remove()
    clips = torch.cat(seen)[..., :64, :80]  # (K, 3, T, H', W') -> the 64 x 80 frames, no padding
    grey = (clips * 0.225 + 0.45) * 255  # undo the normalisation
    return result, (grey.mean(dim=(1, 3, 4)) / 3).round().int().tolist()  # grey level 3 * n


def test_a_60_fps_video_is_cut_into_clips_at_30_fps_and_annotated_at_60(model, make_video, tmp_path):
    path = make_video(tmp_path / "v60.mp4", num_frames=85, fps=60)  # 1.42 s, frame n grey 3 * n
    result, clips = _clip_frame_numbers(model, lambda: _detect(model, path, tmp_path / "out"))
    # Keyframes, times and the annotated video stay in the input's own frames.
    assert [k.frame for k in result.keyframes] == [0, 60] and result.num_frames == 85
    doc = json.loads(result.json_path.read_text())
    assert [(k["frame"], k["time"]) for k in doc["keyframes"]] == [(0, 0.0), (60, 1.0)]
    assert doc["fps"] == 60 and doc["clip_fps"] == 30 and doc["num_frames"] == 85
    rate, _, frames = _read_back(result.video_path)
    assert (rate, len(frames)) == (60, 85)
    # Clip frames 2 * 4 = 8 video frames apart (4 at 30 fps), clamped to frames 0 and 84.
    assert clips == [
        [0] * 9 + [8, 16, 24, 32, 40, 48, 56],
        [0, 4, 12, 20, 28, 36, 44, 52, 60, 68, 76] + [84] * 5,
    ]


def test_a_25_fps_video_is_cut_into_clips_at_30_fps(model, make_video, tmp_path):
    path = make_video(tmp_path / "v25.mp4", num_frames=85, fps=25)
    result, clips = _clip_frame_numbers(model, lambda: _detect(model, path, tmp_path / "out", stride=40))
    assert [k.frame for k in result.keyframes] == [0, 40, 80]
    assert json.loads(result.json_path.read_text())["keyframes"][1]["time"] == 1.6
    # Keyframe 40 at 1.6 s: the frames nearest to 1.6 s + (-32, -28, ..., +28) / 30 s, i.e. to
    # frame 40 + (-32, -28, ..., +28) * 25 / 30.
    assert clips[1] == [13, 17, 20, 23, 27, 30, 33, 37, 40, 43, 47, 50, 53, 57, 60, 63]


def test_a_30_fps_video_gives_the_clips_of_frame_offsets(model, video, tmp_path):
    _, clips = _clip_frame_numbers(model, lambda: _detect(model, video, tmp_path / "out"))
    offsets = np.arange(-32, 29, 4)
    assert clips == [np.clip(k + offsets, 0, 69).tolist() for k in (0, 30, 60)]


def test_a_loaded_model_cuts_clips_at_its_training_frame_rate(model, make_video, tmp_path):
    """A model trained on 60 fps frames (`data.fps: 60`) gets 60 fps clips of a 60 fps video."""
    from evad.inference import InputSettings, LoadedModel

    path = make_video(tmp_path / "v60.mp4", num_frames=85, fps=60)
    loaded = LoadedModel(model, IDS, NAMES, InputSettings(short_side=64, clip_fps=60), person_threshold=0.0)
    result, clips = _clip_frame_numbers(
        model, lambda: loaded.detect(path, tmp_path / "out", video_min_side=0, progress=False)
    )
    assert json.loads(result.json_path.read_text())["clip_fps"] == 60
    assert clips[1] == np.clip(60 + np.arange(-32, 29, 4), 0, 84).tolist()


@pytest.mark.parametrize(("data", "clip_fps"), [({"fps": 60}, 60), ({}, 30)])
def test_cli_cuts_clips_at_the_checkpoints_training_frame_rate(make_video, tmp_path, data, clip_fps):
    """The clip rate is the training config's data.fps (30 where it is not set)."""
    from evad.config import config_from_dict
    from evad.engine.checkpoint import model_state, save_checkpoint

    config = config_from_dict({"model": {"preset": "tiny"}, "data": {"test_short_side": 32, **data}}, "test")
    model = evad.create_model("tiny", num_classes=2)
    dataset = {"num_classes": 2, "class_ids": [4, 9], "class_names": ["walk", "turn around"]}
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": model_state(model), "config": config.to_dict(), "dataset": dataset})
    video = make_video(tmp_path / "a.mp4", num_frames=8, fps=60)
    assert _cli([str(video), "--checkpoint", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "out" / "detections.json").read_text())["clip_fps"] == clip_fps
