"""`evad detect --example`: a rendered synthetic clip, written next to its detections."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from evad.cli import main
from evad.inference import pretrained
from evad.inference.example import write_example_video
from evad.inference.results import OUTPUT_FILES

TINY = ["--model", "tiny", "--num-classes", "2", "--short-side", "64", "--no-progress"]


def _frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_example_writes_the_clip_and_detects_on_it(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["detect", "--example", "--out", str(out), *TINY, "--person-threshold", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["example.mp4", *OUTPUT_FILES])
    frames = _frames(out / "example.mp4")
    assert frames.shape == (120, 128, 176, 3) and frames.std() > 20  # 4 s at 30 fps, not blank
    doc = json.loads((out / "detections.json").read_text())
    assert [k["time"] for k in doc["keyframes"]] == [0.0, 1.0, 2.0, 3.0]
    assert all(k["detections"] for k in doc["keyframes"])
    assert "example.mp4" in capsys.readouterr().out

    # The clip is the same every time; existing results are kept without --overwrite.
    np.testing.assert_array_equal(_frames(write_example_video(tmp_path / "again.mp4", 4)), frames)
    assert main(["detect", "--example", "--out", str(out), *TINY]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["detect", *TINY], "give a VIDEO or --example"),
        (["detect", "v.mp4", "--example", *TINY], "not both"),
        (["detect", "--example"], "no packaged model is installed"),
    ],
)
def test_bad_requests_are_one_line_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "packaged_checkpoint", lambda: tmp_path / "missing.pt")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not (tmp_path / "detections").exists()
