"""Streaming decoding: header facts, keyframe choice, clamped clips, bounded memory, bad files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from evad.errors import UserError
from evad.inference.video import ClipSampler, Frame, VideoDecodeWarning, VideoReader, probe_video


def _clips(path, **sampler_args):
    with VideoReader(path) as reader:
        return list(ClipSampler(**sampler_args).clips(reader.frames()))


def test_reads_rate_size_and_every_frame_with_its_timestamp(make_video, tmp_path, frame_number):
    path = make_video(tmp_path / "v.mp4", num_frames=50, size=(64, 80), fps=25)
    info = probe_video(path)
    assert (info.height, info.width, info.fps, info.declared_frames) == (64, 80, 25.0, 50)
    assert info.frame_rate == 25 and info.duration == pytest.approx(2.0)
    with VideoReader(path) as reader:
        frames = list(reader.frames())
        assert not reader.truncated and reader.num_decoded == 50
    assert [f.index for f in frames] == list(range(50))
    assert [frame_number(f.image) for f in frames] == list(range(50))
    np.testing.assert_allclose([f.time for f in frames], np.arange(50) / 25, atol=1e-9)
    assert frames[0].image.shape == (64, 80, 3) and frames[0].image.dtype == np.uint8


def test_keyframes_one_per_second_and_every_stride_frames(video):
    # 70 frames at 30 fps: 2.33 s, so keyframes at 0, 1 and 2 s.
    at_rate = _clips(video, rate=1.0)
    assert [c.keyframe for c in at_rate] == [0, 30, 60]
    assert [c.time for c in at_rate] == [0.0, 1.0, 2.0]
    # 0.25 s lies halfway between frames 7 and 8: ties take the earlier frame.
    assert [c.keyframe for c in _clips(video, rate=4.0)] == [0, 7, 15, 22, 30, 37, 45, 52, 60, 67]
    by_stride = _clips(video, stride=16)
    assert [c.keyframe for c in by_stride] == [0, 16, 32, 48, 64]
    assert by_stride[1].time == pytest.approx(16 / 30)


def test_clip_frames_are_clamped_at_both_ends_of_the_video(video, frame_number):
    first, _, last = _clips(video, rate=1.0)
    assert first.frame_indices == (0,) * 9 + (4, 8, 12, 16, 20, 24, 28)  # offsets -32..+28, clamped at 0
    assert last.frame_indices == (28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 68) + (69,) * 5  # clamped at 69
    for clip in (first, last):
        assert clip.frames.shape == (16, 64, 80, 3)
        assert [frame_number(f) for f in clip.frames] == list(clip.frame_indices)  # the decoded pixels agree
        assert clip.frame_indices[8] == clip.keyframe  # keyframe = input index 8


def test_a_video_shorter_than_one_clip_still_gives_clips(make_video, tmp_path, frame_number):
    clips = _clips(make_video(tmp_path / "short.mp4", num_frames=10), stride=5)
    assert [c.keyframe for c in clips] == [0, 5]
    assert clips[1].frame_indices == (0,) * 7 + (1, 5) + (9,) * 7
    assert [frame_number(f) for f in clips[1].frames] == list(clips[1].frame_indices)


def test_variable_frame_rate_keyframes_follow_the_timestamps(make_video, tmp_path):
    # 25 frames 40 ms apart, then 20 frames 100 ms apart: 1 s is frame 25, 2 s is frame 35,
    # where assuming a constant rate would pick other frames.
    times = [40 * i for i in range(25)] + [1000 + 100 * i for i in range(20)]
    path = make_video(tmp_path / "vfr.mp4", times_ms=times)
    with VideoReader(path) as reader:
        np.testing.assert_allclose([f.time for f in reader.frames()], np.array(times) / 1000, atol=1e-6)
    clips = _clips(path, rate=1.0)
    assert [c.keyframe for c in clips] == [0, 25, 35]
    assert [c.frame_time for c in clips] == pytest.approx([0.0, 1.0, 2.0])


def test_rate_keyframes_take_the_nearest_frame():
    frames = [
        Frame(i, t, None, np.zeros((1, 1, 3), np.uint8)) for i, t in enumerate([0.0, 0.7, 1.2, 1.9, 2.6])
    ]
    clips = list(ClipSampler(rate=1.0).clips(frames))
    # 1 s -> 1.2 (not 0.7), 2 s -> 1.9; 3 s is still inside the video (the last frame lasts 0.7 s).
    assert [c.keyframe for c in clips] == [0, 2, 3, 4]
    # A rate above the frame rate does not repeat frames.
    assert [c.keyframe for c in ClipSampler(rate=10.0).clips(frames)] == [0, 1, 2, 3, 4]


def test_millisecond_timestamps_give_the_keyframes_of_exact_ones(make_video, tmp_path):
    # 90 frames at 30 fps last 3.00 s: keyframes at 0, 1 and 2 s, also where timestamps are rounded
    # to the millisecond (MKV, WebM) and the last frame seems to end at 2.967 + 0.034 = 3.001 s.
    frames = [Frame(i, round(i / 30, 3), i, np.zeros((1, 1, 3), np.uint8)) for i in range(90)]
    assert [c.keyframe for c in ClipSampler(rate=1.0).clips(frames)] == [0, 30, 60]
    mkv = make_video(
        tmp_path / "v.mkv", num_frames=90, size=(16, 16), noise=True, container_format="matroska"
    )
    assert [c.keyframe for c in _clips(mkv, rate=1.0)] == [0, 30, 60]


@pytest.mark.parametrize("sampler_args", [{"rate": 1.0}, {"stride": 8}, {"stride": 1}])
def test_memory_is_bounded_by_the_clip_window(sampler_args):
    pulled = []

    def frames():  # instrumented source: records how far decoding has gone
        for i in range(300):
            pulled.append(i)
            yield Frame(i, i / 30, i, np.full((2, 2, 3), i % 256, np.uint8))

    sampler = ClipSampler(**sampler_args)
    assert sampler.window == 61
    count = 0
    for clip in sampler.clips(frames()):
        assert len(sampler.buffer) <= sampler.window
        # Only the frames up to the keyframe's last clip frame (+1 to decide the nearest) are read.
        assert len(pulled) - 1 <= min(clip.keyframe + sampler.after + 1, 299)
        count += 1
    assert sampler.max_buffered == 61 and count > 1


def test_missing_file_text_file_and_audio_only_file_are_user_errors(tmp_path):
    import av

    with pytest.raises(UserError, match="no such video file"):
        VideoReader(tmp_path / "missing.mp4")
    with pytest.raises(UserError, match="is a folder, not a video file"):
        VideoReader(tmp_path)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(UserError, match="not a readable video file"):
        VideoReader(text)
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(UserError, match="no video stream"):
        VideoReader(audio)


def test_truncated_file_decodes_what_it_can_and_warns(make_video, tmp_path):
    path = make_video(tmp_path / "full.mp4", num_frames=60, noise=True, faststart=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with VideoReader(cut) as reader, pytest.warns(VideoDecodeWarning, match="decoded"):
        clips = list(ClipSampler(rate=1.0).clips(reader.frames()))
    assert reader.truncated and 0 < reader.num_decoded < 60
    assert [c.keyframe for c in clips] == [0, 30] if reader.num_decoded > 30 else [0]

    cut.write_bytes(data[: data.index(b"mdat") + 4])  # the header survives, no frame does
    with VideoReader(cut) as reader, pytest.raises(UserError, match="no decodable video frames"):
        list(reader.frames())


def test_truncated_stream_without_a_frame_count_is_detected_by_its_duration(make_video, tmp_path):
    path = make_video(tmp_path / "full.mkv", num_frames=60, noise=True, container_format="matroska")
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with VideoReader(cut) as reader, pytest.warns(VideoDecodeWarning, match="announces 2.00 s"):
        assert 0 < sum(1 for _ in reader.frames()) < 60


def test_complete_file_does_not_warn(video):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with VideoReader(video) as reader:
            assert sum(1 for _ in reader.frames()) == 70


def test_sampler_rejects_bad_arguments():
    for rate in (0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="rate"):
            ClipSampler(rate=rate)
    with pytest.raises(ValueError, match="stride"):
        ClipSampler(stride=0)
