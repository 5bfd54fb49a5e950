"""Streaming decoding: header facts, keyframe choice, clips at the clip frame rate, clamped clips,
bounded memory, bad files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from evad.errors import UserError
from evad.inference.clips import ClipSampler
from evad.inference.video import Frame, VideoDecodeWarning, VideoReader, probe_video


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


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_frames_with_rotation_metadata_are_read_upright(make_video, tmp_path, rotation):
    """A phone's portrait video stores its frames sideways with a display matrix: they are read as
    players and ffmpeg show them (turned counterclockwise by the rotation), in the shown size."""
    path = make_video(tmp_path / "v.mp4", num_frames=3, size=(64, 80), noise=True)
    rotated = make_video(tmp_path / "rotated.mp4", num_frames=3, size=(64, 80), noise=True, rotation=rotation)
    size = (80, 64) if rotation % 180 else (64, 80)
    info = probe_video(rotated)
    assert ((info.height, info.width), info.rotation) == (size, rotation)
    with VideoReader(path) as reader, VideoReader(rotated) as turned:
        for stored, shown in zip(reader.frames(), turned.frames(), strict=True):
            assert shown.image.shape == (*size, 3) and shown.image.flags.c_contiguous
            np.testing.assert_array_equal(shown.image, np.rot90(stored.image, rotation // 90))


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
@pytest.mark.parametrize(("fps", "held"), [(30, 61), (60, 121), (25, 51)])
def test_memory_is_bounded_by_the_clip_window(sampler_args, fps, held):
    """The window holds the clip span in time (2 s for 16 x 4 clips at 30 fps) of the video's
    frames, plus one: 61 frames at 30 fps as before clips were sampled in time, 121 at 60 fps."""
    pulled = []

    def frames():  # instrumented source: records how far decoding has gone
        for i in range(300):
            pulled.append(i)
            yield Frame(i, i / fps, i, np.full((2, 2, 3), i % 256, np.uint8))

    sampler = ClipSampler(**sampler_args)
    assert sampler.window == 61 and sampler.frames_held(fps) == held
    count = 0
    for clip in sampler.clips(frames()):
        assert len(sampler.buffer) <= held
        assert sampler.buffer[-1].time - sampler.buffer[0].time <= 2 + 1 / fps + 1e-9
        # Only the frames up to the clip's last frame (+1 to know it is the last one before its
        # time slot ends, or to decide the nearest keyframe) are read.
        assert len(pulled) - 1 <= max(*clip.frame_indices, clip.keyframe) + 1
        count += 1
    assert sampler.max_buffered == held and count > 1


def test_keyframe_only_clips_still_take_keyframe_times_in_the_last_frame():
    # 68 frames at 30 fps end at 2.267 s: 2.25 s is on the last frame, also where the window of a
    # keyframe-only clip (sampling_rate 0) holds little more than that frame.
    frames = [Frame(i, i / 30, i, np.zeros((1, 1, 3), np.uint8)) for i in range(68)]
    for sampling_rate in (0, 4):
        clips = list(ClipSampler(rate=4.0, sampling_rate=sampling_rate).clips(frames))
        assert [c.keyframe for c in clips][-2:] == [60, 67]


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


def test_a_raw_stream_whose_start_is_damaged_is_a_user_error(make_video, tmp_path):
    """A raw H.264 stream whose parameter sets cannot be decoded reports a 0 x 0 frame size; detection
    went on to fail in the resize with 'sizes must be positive, got 0x0 -> 128'."""
    path = make_video(tmp_path / "full.h264", num_frames=20, container_format="h264")
    with VideoReader(path) as reader:
        assert (reader.info.height, reader.info.width) == (64, 80)
    data = path.read_bytes()
    damaged = tmp_path / "damaged.h264"
    damaged.write_bytes(data[:100] + np.random.default_rng(0).integers(0, 256, len(data), np.uint8).tobytes())
    with pytest.raises(UserError, match=r"damaged\.h264: no frame size in the video stream"):
        VideoReader(damaged)


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


# Clips at the model's clip frame rate (30 fps, the rate of the training frames), whatever the video's.

OFFSETS = np.arange(-32, 29, 4)  # 16 x 4 clip offsets, in frames at 30 fps


def _nearest_frames(times, keyframe_time, clip_fps=30.0):
    """Index of the frame nearest to each clip frame's time (ties: the earlier one), found by brute
    force: what `ffmpeg -r 30` puts at these times for the rates tested here."""
    times = np.asarray(times)
    targets = keyframe_time + OFFSETS / clip_fps  # (16,)
    distance = np.abs(times[None, :] - targets[:, None])  # (16, F)
    return tuple(int(j) for j in np.argmin(distance + 1e-9 * np.arange(len(times)), axis=1))


@pytest.mark.parametrize(
    ("fps", "keyframes", "second_clip"),
    [
        # 60 fps: every 8th frame around frame 60 (1 s), clamped to frames 0 and 84.
        (60, [0, 60], (0, 4, 12, 20, 28, 36, 44, 52, 60, 68, 76, 84, 84, 84, 84, 84)),
        # 25 fps: the frames nearest to 1 s + (-32, -28, ..., +28) / 30 s.
        (25, [0, 25, 50, 75], (0, 2, 5, 8, 12, 15, 18, 22, 25, 28, 32, 35, 38, 42, 45, 48)),
    ],
)
def test_clips_take_the_frames_at_30_fps_times_whatever_the_video_rate(
    make_video, tmp_path, frame_number, fps, keyframes, second_clip
):
    path = make_video(tmp_path / f"v{fps}.mp4", num_frames=85, fps=fps)
    clips = _clips(path, rate=1.0)
    # Keyframes stay in the video's own frames and times.
    assert [c.keyframe for c in clips] == keyframes
    assert [c.time for c in clips] == list(range(len(keyframes)))
    assert clips[1].frame_indices == second_clip
    times = np.arange(85) / fps
    for clip in _clips(path, stride=1):  # every frame's clip, against brute force
        assert clip.frame_indices == _nearest_frames(times, clip.frame_time)
        assert [frame_number(f) for f in clip.frames] == list(clip.frame_indices)  # the decoded pixels agree
        assert clip.frame_indices[8] == clip.keyframe


@pytest.mark.parametrize("fps", [60, 25])
def test_clips_are_the_frames_training_reads_from_the_same_video_file(
    make_video, tmp_path, frame_number, fps
):
    """`evad.data.frames.VideoFiles` (how training reads video files at data.fps = 30) gives the
    same frames for the clip of the keyframe at whole second s (1-based 30 fps frame 30 s + 1)."""
    from evad.data.frames import VideoFiles, clip_frame_numbers

    path = make_video(tmp_path / "v.mp4", num_frames=85, fps=fps)
    files = VideoFiles(tmp_path, "{video}.mp4", fps=30)
    last = files.scan(["v"])["v"]
    for clip in _clips(path, rate=1.0):
        numbers = clip_frame_numbers(30 * round(clip.time) + 1, 16, 4, last)
        assert [frame_number(f) for f in files.read("v", numbers)] == list(clip.frame_indices)


def test_a_30_fps_video_gives_exactly_the_frame_offsets_of_index_sampling(video, frame_number):
    """At the clip rate the time rule cuts frames k - 32, k - 28, ..., k + 28 (clamped), as clips
    were cut before they were sampled in time: the same frames, the same pixels."""
    with VideoReader(video) as reader:
        decoded = list(reader.frames())
    for args in ({"stride": 1}, {"rate": 1.0}, {"rate": 7.0}):
        clips = list(ClipSampler(**args).clips(iter(decoded)))
        assert len(clips) > 2
        for clip in clips:
            assert clip.frame_indices == tuple(int(i) for i in np.clip(clip.keyframe + OFFSETS, 0, 69))
            expected = np.stack([decoded[i].image for i in clip.frame_indices])
            assert np.array_equal(clip.frames, expected)


@pytest.mark.parametrize(
    "time_of",
    [
        lambda i: i * 1001 / 30000,  # 29.97 fps (NTSC): 1 ms off 30 fps slots 32 frames away
        lambda i: round(i / 30, 3),  # 30 fps with millisecond timestamps (MKV, WebM)
        lambda i: round(i * 1001 / 30000, 3),
    ],
)
def test_rates_and_timestamps_near_30_fps_also_give_the_index_offsets(time_of):
    frames = [Frame(i, time_of(i), i, np.full((1, 1, 3), i % 256, np.uint8)) for i in range(300)]
    clips = list(ClipSampler(stride=1).clips(frames))
    assert len(clips) == 300
    for clip in clips:
        assert clip.frame_indices == tuple(int(i) for i in np.clip(clip.keyframe + OFFSETS, 0, 299))


def test_variable_frame_rate_clip_frames_follow_the_timestamps():
    # 1 s at 50 fps, then 2 s at 10 fps: the clip of the keyframe at 1.5 s reaches back into the
    # 50 fps part and forward into the 10 fps part. Each clip frame is the last frame shown before
    # its time + 1/60 s, the 30 fps slot `ffmpeg -r 30` fills with it (at 50 fps not always the
    # nearest frame: 0.58 s rather than 0.56 s for 1.5 - 28/30 = 0.567 s).
    times = [i / 50 for i in range(50)] + [1 + i / 10 for i in range(20)]
    frames = [Frame(i, t, None, np.full((1, 1, 3), i, np.uint8)) for i, t in enumerate(times)]
    clip = next(iter(ClipSampler(times=[1.5]).clips(frames)))
    assert (clip.keyframe, clip.frame_time) == (55, 1.5)
    slot_ends = 1.5 + OFFSETS / 30 + 1 / 60
    assert clip.frame_indices == tuple(int(j) for j in np.maximum(np.searchsorted(times, slot_ends) - 1, 0))
    assert clip.frame_indices == (22, 29, 35, 42, 49, 51, 52, 53, 55, 56, 57, 59, 60, 61, 63, 64)
    assert clip.frames[:, 0, 0, 0].tolist() == list(clip.frame_indices)


def test_the_clip_rate_is_a_setting():
    frames = [Frame(i, i / 60, i, np.zeros((1, 1, 3), np.uint8)) for i in range(300)]
    at_60 = next(iter(ClipSampler(times=[2.0], clip_fps=60).clips(frames)))
    assert at_60.frame_indices == tuple(int(i) for i in 120 + OFFSETS)  # a model trained at 60 fps
    at_30 = next(iter(ClipSampler(times=[2.0], clip_fps=30).clips(frames)))
    assert at_30.frame_indices == tuple(int(i) for i in np.clip(120 + 2 * OFFSETS, 0, 299))
    # Above twice the clip rate a 1/15 s slot holds 4 frames: `ffmpeg -r 15` fills it with the last
    # one shown before its middle, the keyframe's successor (2.0167 s < 2.0 + 1/30 s).
    at_15 = next(iter(ClipSampler(times=[2.0], clip_fps=15).clips(frames)))
    assert at_15.keyframe == 120
    assert at_15.frame_indices == tuple(int(i) for i in np.clip(121 + 4 * OFFSETS, 0, 299))
    for bad in (0, -30, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="clip_fps"):
            ClipSampler(clip_fps=bad)
