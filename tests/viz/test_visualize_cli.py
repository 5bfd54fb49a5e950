"""`evad visualize tokens|attention` on a tiny video with the tiny random model."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from evad.cli import main
from evad.inference import pretrained

TINY = ["--model", "tiny", "--num-classes", "2", "--short-side", "64"]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """2 s of 64 x 96 noise at 20 fps."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for _ in range(40):
            image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _size(rows: int) -> tuple[int, int]:
    """(height, width) of a figure of 64 x 96 frames (cells enlarged to 128 x 192), 8 columns."""
    return 28 + rows * (128 + 4), 170 + 8 * (192 + 4)


def test_tokens_picture_has_a_row_per_pruning_stage(video, tmp_path, capsys):
    out = tmp_path / "figs" / "tokens.png"
    assert main(["visualize", "tokens", str(video), *TINY, "--keep-rate", "0.5", "--out", str(out)]) == 0
    assert cv2.imread(str(out)).shape[:2] == _size(4)  # input + 3 pruning layers of the tiny preset
    printed = capsys.readouterr().out
    assert "keyframe at 1.00 s (frame 20)" in printed and "192 -> 96" in printed  # middle of 2 s


def test_the_default_time_of_a_one_frame_video_is_its_frame(tmp_path, capsys):
    path = tmp_path / "one.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 96, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    for kind in ("tokens", "attention"):
        argv = ["visualize", kind, str(path), *TINY, "--out", str(tmp_path / f"{kind}.png")]
        assert main([*argv, "--person-threshold", "0"] if kind == "attention" else argv) == 0
        assert "keyframe at 0.00 s (frame 0)" in capsys.readouterr().out


def test_an_unknown_device_is_a_one_line_error(video, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["visualize", "tokens", str(video), *TINY, "--out", str(tmp_path / "t.png"), "--device", "tpu"])
    assert (
        exit_info.value.code == 2
        and "must be cpu, cuda or cuda:N, got tpu" in capsys.readouterr().err.splitlines()[-1]
    )


def test_the_picture_format_follows_the_file_name(video, tmp_path):
    out = tmp_path / "tokens.jpg"
    assert main(["visualize", "tokens", str(video), *TINY, "--out", str(out)]) == 0
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, not a PNG under a .jpg name
    assert cv2.imread(str(out)).shape[:2] == _size(4)


def test_attention_picture_has_a_row_per_actor(video, tmp_path, capsys):
    out = tmp_path / "attention.png"
    argv = ["visualize", "attention", str(video), *TINY, "--out", str(out), "--time", "0.5"]
    assert main([*argv, "--person-threshold", "0", "--max-actors", "2", "--block", "0"]) == 0
    assert cv2.imread(str(out)).shape[:2] == _size(3)  # frames + 2 actors
    assert "2 actor(s), decoder block 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--person-threshold", "1"], "no actor at 1.00 s has a person score >= 1.0"),
        (["--person-threshold", "0", "--block", "5"], "block must be in [-2, 1]"),
        (["--time", "9"], "outside the video"),
    ],
)
def test_bad_options_are_one_line_errors(video, tmp_path, capsys, extra, message):
    out = tmp_path / "a.png"
    assert main(["visualize", "attention", str(video), *TINY, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("evad: error")]) == 1 and message in err[-1]
    assert not out.exists()


def test_bad_inputs_fail_before_the_model_loads(video, tmp_path, capsys, monkeypatch):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    existing = tmp_path / "tokens.png"
    existing.write_bytes(b"keep me")
    monkeypatch.setattr(pretrained, "packaged_checkpoint", lambda: tmp_path / "missing.pt")
    cases = [
        ([str(tmp_path / "missing.mp4"), *TINY], "no such video file"),
        ([str(text), *TINY], "not a readable video"),
        ([str(video), *TINY, "--out", str(existing)], "--overwrite"),
        ([str(video), *TINY, "--out", str(tmp_path / "t.gif")], "--out must end in .png, .jpg, .jpeg"),
        ([str(video), "--out", str(tmp_path / "t.png")], "no packaged model is installed"),
    ]
    for argv, message in cases:
        for kind in ("tokens", "attention"):
            assert main(["visualize", kind, *argv]) == 2
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and message in err, err
    assert existing.read_bytes() == b"keep me"
