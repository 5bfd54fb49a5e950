"""Keyframe clips cut from a stream of decoded frames (SPEC section 1).

A clip is 16 frames at stride 4 around its keyframe (the keyframe at input index 8), taken at the
frame rate the model was trained on, `clip_fps` (the training config's ``data.fps``; 30, the rate
at which AVA's frames were extracted), not at the video's own rate: clip frame i shows the time
``keyframe time + offset_i / clip_fps`` with offsets -32, -28, ..., +28, so a clip spans 2.1 s
of a 25 or a 60 fps video alike. Each clip frame is the decoded frame that ``ffmpeg -r clip_fps``
would put at that time, the rule by which training resamples video files
(`evad.data.frames.VideoFiles`): the last frame shown before the time plus half a clip-frame
period (of two equally near, the earlier), clamped to the first and last frame. On a video at
`clip_fps` these are exactly the frames k - 32, k - 28, ..., k + 28 around keyframe k, also where
timestamps are rounded to the millisecond or the rate is 29.97 (so a 30 fps video gives the clips
that sampling by frame index gave); a 60 fps video gives every 8th frame, a 25 fps one the frames nearest
to 30 fps times. The keyframe is clip frame 8 for videos up to 2 x `clip_fps` (above that it may
be the next frame, as in the resampled training frames).

Frames are decoded one at a time (`evad.inference.video`) and kept in a sliding window of the
clip span in time (60 / clip_fps seconds of the video's frames, plus one: 61 frames at 30 fps, 121
at 60 fps), so a clip is cut as soon as the frame after its last one is decoded and memory never
grows with the video's length.

Keyframes, and everything downstream of them, stay in the video's own frames: either one every
``1 / rate`` seconds (keyframe k at time k / rate, on the nearest decoded frame; AVA uses rate 1),
one every ``stride`` frames, or at given times (a picture of one moment). Times are the frames'
timestamps, not ``index / fps``, so variable-frame-rate videos get the right keyframes and clip
frames.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from evad.inference.video import TIME_EPS, Frame

# Seconds: MKV and WebM store millisecond timestamps, so a video's end estimated from its last two
# frames may be off by up to 1.5 ms (each rounded by up to 0.5 ms).
_ROUNDING = 2e-3
# Seconds: a frame this close to the end of a clip frame's slot (its time plus half a clip-frame
# period) already counts as the next slot's, as `evad.data.frames` reads video files for training.
_SLOT_TOLERANCE = 1e-3


@dataclass
class KeyframeClip:
    """The frames of one clip, cut around its keyframe.

    Attributes:
        keyframe: Frame index of the keyframe.
        time: Keyframe time in seconds: k / rate when sampling at a rate (the nominal time the
            keyframe stands for), the keyframe's timestamp when sampling every `stride` frames.
        frame_time: Timestamp of the keyframe frame itself; clip frame i shows the time
            ``frame_time + offset_i / clip_fps``.
        frame_indices: (T,) frame index (in the video's own frames) of every clip frame.
        frames: (T, ...) the clip's frame images, stacked.
    """

    keyframe: int
    time: float
    frame_time: float
    frame_indices: tuple[int, ...]
    frames: np.ndarray


class _TimedKeyframes:
    """Keyframe k at time `time_of(k)` (increasing; None: no more), on the decoded frame nearest to
    it (ties: the earlier frame). Keyframes are (frame index, time, frame time)."""

    def __init__(self, time_of: Callable[[int], float | None]) -> None:
        self.time_of = time_of
        self.k = 0
        self.prev: tuple[int, float] | None = None
        self.last_index = -1

    def _emit(self, frame: tuple[int, float], time: float, out: list[tuple[int, float, float]]) -> None:
        if frame[0] != self.last_index:  # a rate above the frame rate would repeat frames
            out.append((frame[0], time, frame[1]))
            self.last_index = frame[0]
        self.k += 1

    def push(self, index: int, time: float) -> list[tuple[int, float, float]]:
        out: list[tuple[int, float, float]] = []
        while (t := self.time_of(self.k)) is not None and t <= time + TIME_EPS:
            nearer_prev = self.prev is not None and t - self.prev[1] <= time - t + TIME_EPS
            self._emit(self.prev if self.prev is not None and nearer_prev else (index, time), t, out)
        self.prev = (index, time)
        return out

    def finish(self, end_time: float) -> list[tuple[int, float, float]]:
        """Keyframe times after the last frame's timestamp but before the video's end (`end_time`,
        estimated from rounded timestamps)."""
        out: list[tuple[int, float, float]] = []
        while self.prev is not None and (t := self.time_of(self.k)) is not None and t < end_time - _ROUNDING:
            self._emit(self.prev, t, out)
        return out


class ClipSampler:
    """Cut keyframe clips out of a stream of frames with a sliding window.

    Clip frame i of the keyframe at timestamp t is the frame shown at ``t + offset_i / clip_fps``
    (the last frame before that time plus half a clip-frame period; see the module docstring), so
    clips span the same time as the model's training clips whatever the video's frame rate.

    The window holds the frames of the clip span in time, ``(window - 1) / clip_fps`` seconds, plus
    one (`frames_held`: 61 frames for 16 x 4 clips of a 30 fps video, 121 at 60 fps, 51 at 25 fps);
    a clip is cut as soon as the first frame past its last clip frame's time slot arrives (or the
    stream ends), so at most one frame is read ahead of the clip's last frame.

    Args:
        rate: Keyframes per second (ignored when `stride` or `times` is given).
        stride: One keyframe every `stride` frames, starting at frame 0.
        times: Keyframes at these times in seconds instead (each on the nearest frame).
        num_frames: Clip length T (16).
        sampling_rate: Step inside a clip in frames at `clip_fps` (4; 0 repeats the keyframe).
        clip_fps: Frame rate at which the model's clips were sampled (training's ``data.fps``, 30).
    """

    def __init__(
        self,
        *,
        rate: float | None = 1.0,
        stride: int | None = None,
        times: Sequence[float] | None = None,
        num_frames: int = 16,
        sampling_rate: int = 4,
        clip_fps: float = 30.0,
    ) -> None:
        if stride is not None and times is not None:
            raise ValueError("give stride or times, not both")
        if stride is not None:
            if stride < 1:
                raise ValueError(f"stride must be >= 1 frame, got {stride}")
            rate = None
        elif times is not None:
            times = tuple(sorted(float(t) for t in times))
            rate = None
        elif rate is None or not 0 < rate < math.inf:
            raise ValueError(f"rate must be a finite number > 0 keyframes per second, got {rate}")
        if num_frames < 1 or sampling_rate < 0:
            raise ValueError(
                f"need num_frames >= 1 and sampling_rate >= 0, got {num_frames}, {sampling_rate}"
            )
        if not 0 < clip_fps < math.inf:
            raise ValueError(f"clip_fps must be a finite number > 0 frames per second, got {clip_fps}")
        self.rate = rate
        self.stride = stride
        self.times = times
        self.clip_fps = float(clip_fps)
        # Input index T // 2 is the keyframe: offsets -32, -28, ..., +28 for 16 x 4 (frames at clip_fps).
        self.offsets = tuple((i - num_frames // 2) * sampling_rate for i in range(num_frames))
        self.before = -self.offsets[0]
        self.after = self.offsets[-1]
        # The clip span in frames at clip_fps; one frame more where the span is one frame: the
        # keyframe nearest to a time may be the frame before the one that decided it.
        self.window = self.before + max(self.after, 1) + 1
        # Clip frame i takes the last frame before slot end i: its time + half a period, less the
        # tolerance (kept below a quarter period for absurdly low clip rates).
        half = 0.5 / self.clip_fps - min(_SLOT_TOLERANCE, 0.25 / self.clip_fps)
        self._slot_ends = tuple(o / self.clip_fps + half for o in self.offsets)  # from the keyframe time
        self.buffer: deque[Frame] = deque()
        self.max_buffered = 0

    def frames_held(self, fps: float) -> int:
        """The most frames the window holds for a video of constant rate `fps`: those of the clip
        span, ``(window - 1) / clip_fps`` seconds, plus one (61 for 16 x 4 clips at 30 fps, 121 at
        60 fps, 51 at 25 fps)."""
        return math.ceil((self.window - 1) * fps / self.clip_fps - 1e-9) + 1

    def clips(self, frames: Iterable[Frame]) -> Iterator[KeyframeClip]:
        """Yield the clip of every keyframe, in order, while consuming `frames`."""
        self.buffer.clear()
        selector = self._selector()
        pending: deque[tuple[int, float, float]] = deque()  # (keyframe, time, frame time)
        first_slot, last_slot = min(self._slot_ends), max(self._slot_ends)
        step = 0.0  # from the frame before the last one to the last one
        for frame in frames:
            step = frame.time - self.buffer[-1].time if self.buffer else 0.0
            if selector is not None:
                pending.extend(selector.push(frame.index, frame.time))
            elif frame.index % self.stride == 0:
                pending.append((frame.index, frame.time, frame.time))
            # `frame` ends the last slot of these clips: they are complete without it.
            while pending and frame.time >= pending[0][2] + last_slot:
                yield self._cut(*pending.popleft())
            # Drop the frames no clip can take any more: those before the last frame shown before
            # the first slot end of the earliest clip to come (no later keyframe is earlier than
            # `frame`: a keyframe nearest to a time is at most the frame before the next one).
            earliest = (pending[0][2] if pending else frame.time) + first_slot
            while self.buffer and (self.buffer[1] if len(self.buffer) > 1 else frame).time < earliest:
                self.buffer.popleft()
            self.buffer.append(frame)
            self.max_buffered = max(self.max_buffered, len(self.buffer))
        if not self.buffer:
            return
        if selector is not None:
            # The last frame lasts as long as the one before it: keyframe times up to there count.
            pending.extend(selector.finish(self.buffer[-1].time + step))
        while pending:
            yield self._cut(*pending.popleft())

    def _selector(self) -> _TimedKeyframes | None:
        if self.times is not None:
            times = self.times
            return _TimedKeyframes(lambda k: times[k] if k < len(times) else None)
        if self.rate is not None:
            rate = self.rate
            return _TimedKeyframes(lambda k: k / rate)
        return None

    def _cut(self, keyframe: int, time: float, frame_time: float) -> KeyframeClip:
        """The clip of `keyframe` from the buffer, which holds every frame it may take."""
        times = [f.time for f in self.buffer]
        # The last frame before each slot end; the buffer's first one for a slot before it (that is
        # then the video's first frame) and its last one past the end of the video.
        positions = [max(bisect.bisect_left(times, frame_time + end) - 1, 0) for end in self._slot_ends]
        images = np.stack([self.buffer[p].image for p in positions])  # (T, ...)
        indices = tuple(self.buffer[p].index for p in positions)
        return KeyframeClip(keyframe, time, frame_time, indices, images)
