"""One clip at a chosen time, cut and resized as detection cuts it (`read_keyframe_clip`)."""

from __future__ import annotations

import numpy as np
import pytest

from evad.errors import UserError
from evad.inference import InputSettings, read_keyframe_clip
from evad.inference.clips import ClipSampler
from evad.inference.video import Frame, VideoReader


def test_clip_at_a_time_is_the_detection_clip_of_the_nearest_frame(video, frame_number):
    # 70 frames at 30 fps; 1.01 s is nearest to frame 30, whose clip is frames 0, 2, ..., 58.
    settings = InputSettings(short_side=32, sampling_rate=2)
    read = read_keyframe_clip(video, 1.01, settings=settings)
    assert read.clip.keyframe == 30 and read.clip.time == pytest.approx(1.01)
    assert read.clip.frame_indices == tuple(range(14, 45, 2))
    assert read.input_size == (32, 40) and read.clip.frames.shape == (16, 32, 40, 3)
    assert [frame_number(f) for f in read.clip.frames] == list(read.clip.frame_indices)
    assert (read.info.height, read.info.width) == (64, 80)


def test_default_time_is_the_middle_and_times_outside_the_video_are_user_errors(video):
    assert read_keyframe_clip(video).clip.keyframe == 35  # 70 frames: 1.167 s
    with pytest.raises(UserError, match="outside the video"):
        read_keyframe_clip(video, 5.0)


def test_default_time_of_a_one_frame_video_is_its_frame(make_video, tmp_path):
    read = read_keyframe_clip(make_video(tmp_path / "one.mp4", num_frames=1))  # not 1/60 s, past the frame
    assert (read.clip.keyframe, read.clip.time) == (0, 0.0)


def test_decoding_stops_once_the_clip_is_complete(video, monkeypatch):
    decoded = []
    frames = VideoReader.frames

    def counting(self, transform=None):
        for frame in frames(self, transform):
            decoded.append(frame.index)
            yield frame

    monkeypatch.setattr(VideoReader, "frames", counting)
    read_keyframe_clip(video, 0.2)  # keyframe 6, last clip frame 6 + 28
    assert len(decoded) <= 6 + 28 + 2


def test_sampler_at_given_times_takes_the_nearest_frames():
    frames = [Frame(i, i / 10, i, np.zeros((1, 1, 3), np.uint8)) for i in range(20)]
    clips = ClipSampler(times=[1.54, 0.31], num_frames=4, sampling_rate=1).clips(frames)
    assert [(c.keyframe, c.time) for c in clips] == [(3, 0.31), (15, 1.54)]
    keyframe_only = next(ClipSampler(times=[0.5], sampling_rate=0).clips(frames))
    assert keyframe_only.frame_indices == (5,) * 16


def test_clip_at_a_time_of_a_60_fps_video_is_sampled_at_the_clip_rate(make_video, tmp_path, frame_number):
    """`evad visualize` shows the clip detection sees: frames at 30 fps times (every 8th frame of a
    60 fps video for 16 x 4 clips), or at the model's own training rate."""
    path = make_video(tmp_path / "v60.mp4", num_frames=85, fps=60)
    read = read_keyframe_clip(path, 0.7, settings=InputSettings(short_side=32, sampling_rate=2))
    assert read.clip.keyframe == 42
    assert read.clip.frame_indices == tuple(range(10, 71, 4))  # 42 + 2 * (-16, -14, ..., +14)
    assert [frame_number(f) for f in read.clip.frames] == list(read.clip.frame_indices)
    at_60 = read_keyframe_clip(path, 0.7, settings=InputSettings(short_side=32, sampling_rate=2, clip_fps=60))
    assert at_60.clip.frame_indices == tuple(range(26, 57, 2))
