"""Detection streams: decoded frames are released as it goes, never all held at once (issue 5).

`benchmarks/detect_memory.py` measures the same on a long 1080p video.
"""

from __future__ import annotations

import weakref

import pytest
import torch

import evad
from evad.inference import detect_video
from evad.inference.clips import ClipSampler
from evad.inference.video import VideoReader


@pytest.mark.parametrize(("fps", "window"), [(30, 61), (60, 121)])
def test_detect_video_holds_at_most_a_clip_window_of_frames(make_video, tmp_path, monkeypatch, fps, window):
    """The window is the clip span in time (2 s of 16 x 4 clips at 30 fps) plus one frame: twice
    as many frames for a 60 fps video, never the whole video."""
    path = make_video(tmp_path / "long.mp4", num_frames=200, size=(32, 40), noise=True, fps=fps)
    passes: list[dict] = []
    frames = VideoReader.frames

    def tracked(self, transform=None):
        counts = {"decoded": 0, "alive": 0, "max_alive": 0}
        passes.append(counts)

        def released() -> None:
            counts["alive"] -= 1

        for frame in frames(self, transform):
            counts["decoded"] += 1
            counts["alive"] += 1
            counts["max_alive"] = max(counts["max_alive"], counts["alive"])
            weakref.finalize(frame, released)
            yield frame

    monkeypatch.setattr(VideoReader, "frames", tracked)
    torch.manual_seed(0)
    model = evad.create_model("tiny", num_classes=2)
    result = detect_video(model, path, tmp_path / "out", ["a", "b"], [1, 2], short_side=32, progress=False)

    assert ClipSampler().frames_held(fps) == window  # 61 frames for 16 x 4 clips at 30 fps
    clips, annotate = passes
    assert clips["decoded"] == annotate["decoded"] == result.num_frames == 200
    assert clips["max_alive"] <= window + 1  # the sliding window (plus the frame being handed over)
    assert annotate["max_alive"] <= 2  # drawn, encoded and dropped one by one
    assert clips["alive"] == annotate["alive"] == 0
