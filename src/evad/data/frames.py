"""Reading the frames of a clip: JPEG folders or video files, and the 16x4 sampling (SPEC section 1).

Frames are addressed by 1-based frame number n, the number in the file name of frame folders
(AVA `frames/<video>/<video>_%06d.jpg`, MMAction2 `rawframes/<video>/img_%05d.jpg`, UCF101-24
`rgb-images/<video>/%05d.jpg`); in a video file, frame n is the one shown at time (n - 1) / fps,
turned upright as players and ffmpeg show it when the file has rotation metadata (`upright_rgb`).

Both sources are scanned once when a dataset is built: every frame folder is listed once (not one
stat per file) and every video opened once, so missing or unreadable inputs are reported before
training starts, and the frame counts used to clamp clips are cached for the DataLoader workers.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from evad.errors import UserError

_FRAME_FIELD = re.compile(r"\{frame(?::([^{}]*))?\}")


def clip_frame_numbers(
    keyframe: int | np.ndarray, num_frames: int, sampling_rate: int, last: int
) -> np.ndarray:
    """1-based frame numbers of the clip around a keyframe, clamped to the video's frames 1..last.

    Frame i of the clip is keyframe + (i - num_frames // 2) * sampling_rate: offsets -32, -28, ...,
    +28 for 16x4, so the keyframe is clip frame 8.

    >>> clip_frame_numbers(5, 4, 2, last=8).tolist()
    [1, 3, 5, 7]
    >>> clip_frame_numbers(8, 4, 2, last=8).tolist()
    [4, 6, 8, 8]
    """
    offsets = (np.arange(num_frames) - num_frames // 2) * sampling_rate
    return np.clip(np.asarray(keyframe)[..., None] + offsets, 1, last)


class FrameSource(Protocol):
    """Where the frames of videos come from (frame folders or video files)."""

    def scan(self, videos: Iterable[str]) -> dict[str, int]:
        """Check the videos exist and return the number of their last frame."""
        ...

    def check(self, video: str, numbers: np.ndarray) -> None:
        """Raise UserError naming the first of `numbers` that does not exist."""
        ...

    def read(self, video: str, numbers: np.ndarray) -> np.ndarray:
        """Frames (T, H, W, 3) RGB uint8 of the given 1-based frame numbers."""
        ...


class FrameFolders:
    """JPEG frames at `root / template.format(video=..., frame=n)`.

    Args:
        root: Folder holding the frame folders.
        template: Relative file of frame `frame` of `video`, e.g. "{video}/{video}_{frame:06d}.jpg";
            `{frame}` must appear once, in the file name.
    """

    def __init__(self, root: str | os.PathLike, template: str) -> None:
        fields = list(_FRAME_FIELD.finditer(template))
        if len(fields) != 1 or "/" in template[fields[0].end() :]:
            raise UserError(f"frame template {template!r} must contain '{{frame}}' once, in the file name")
        try:
            template.format(video="v", frame=1)
        except (KeyError, IndexError, ValueError) as err:
            raise UserError(
                f"frame template {template!r} is not a '{{video}}'/'{{frame}}' pattern: {err}"
            ) from None
        self.root = Path(root)
        self.template = template
        self._prefix = template[: fields[0].start()]
        self._suffix = template[fields[0].end() :]
        self._spec = fields[0].group(1) or ""
        # Per video: last frame number, and the sorted frame numbers when some before it are missing.
        self._last: dict[str, int] = {}
        self._present: dict[str, np.ndarray] = {}

    def path(self, video: str, number: int) -> Path:
        return self.root / self.template.format(video=video, frame=int(number))

    def scan(self, videos: Iterable[str]) -> dict[str, int]:
        for video in videos:
            if video not in self._last:
                self._scan_folder(video)
        return dict(self._last)

    def _scan_folder(self, video: str) -> None:
        folder, prefix = os.path.split(self._prefix.format(video=video))
        suffix = self._suffix.format(video=video)
        directory = self.root / folder
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            raise UserError(f"frame folder {directory} of video {video!r} does not exist") from None
        except OSError as err:
            raise UserError(f"cannot list frame folder {directory}: {err.strerror or err}") from None
        start, end = len(prefix), -len(suffix) if suffix else None
        digits = [name[start:end] for name in names if name.startswith(prefix) and name.endswith(suffix)]
        numbers = self._frame_numbers(digits)
        if not len(numbers):
            example = self.path(video, 1).name
            raise UserError(f"frame folder {directory} holds no frames named like {example}")
        self._last[video] = int(numbers[-1])
        if len(numbers) != numbers[-1]:
            self._present[video] = numbers

    def _frame_numbers(self, digits: list[str]) -> np.ndarray:
        """Sorted frame numbers >= 1 of the file-name parts that the template writes exactly."""
        padded = re.fullmatch(r"0(\d+)d", self._spec)
        width = int(padded.group(1)) if padded else 0
        text = "".join(digits)
        if (
            width
            and text.isascii()
            and len(text) == width * len(digits)
            and all(len(d) == width for d in digits)
        ):
            # (F*width,) bytes -> (F, width) digits. Zero-padded digits of one width, vectorised:
            # an AVA folder holds 27,000 frames.
            chars = np.frombuffer(text.encode("ascii"), dtype=np.uint8).reshape(-1, width) - ord("0")
            if np.all(chars < 10):  # non-digits wrapped around below 0
                numbers = np.sort(chars @ 10 ** np.arange(width - 1, -1, -1, dtype=np.int64))
                return numbers[numbers >= 1]
        # Only names the template writes back exactly (zero padding included) are frames.
        exact = [int(d) for d in digits if d.isdigit() and format(int(d), self._spec) == d]
        return np.asarray(sorted(n for n in exact if n >= 1), dtype=np.int64)

    def check(self, video: str, numbers: np.ndarray) -> None:
        numbers = np.asarray(numbers).reshape(-1)  # (*shape) -> (N,) frame numbers
        missing = (numbers < 1) | (numbers > self._last[video])
        if video in self._present:
            missing |= ~np.isin(numbers, self._present[video])
        if missing.any():
            raise UserError(f"missing frame file {self.path(video, int(numbers[np.argmax(missing)]))}")

    def read(self, video: str, numbers: np.ndarray) -> np.ndarray:
        decoded: dict[int, np.ndarray] = {}  # a clamped clip repeats its border frames
        for number in np.unique(numbers).tolist():
            path = self.path(video, number)
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                state = "is missing" if not path.exists() else "cannot be decoded (corrupt or not an image)"
                raise UserError(f"frame file {path} {state}")
            decoded[number] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return _stack([decoded[n] for n in np.asarray(numbers).tolist()], f"frames of {self.root / video}")


def _stack(frames: list[np.ndarray], where: str) -> np.ndarray:
    shapes = {frame.shape for frame in frames}
    if len(shapes) != 1:
        raise UserError(f"{where}: frames of one clip differ in size: {sorted(shapes)}")
    return np.stack(frames)  # (T, H, W, 3)


class VideoFiles:
    """Video files at `root / template.format(video=...)`, decoded with PyAV.

    Frame n (from 1) is the frame nearest to time (n - 1) / fps from the start of the stream (the
    last one shown before (n - 1 / 2) / fps; of two equally near, the earlier), so a video at `fps`
    maps one to one and other rates are resampled as `ffmpeg -r fps` extraction does (its fps
    filter rounds each frame's time to the nearest output slot; the official AVA frames were
    extracted so).

    Args:
        root: Folder of the videos.
        template: File name of `video`, e.g. "{video}.mp4".
        fps: Frame rate at which frame numbers are counted.
    """

    def __init__(self, root: str | os.PathLike, template: str, fps: float) -> None:
        if fps <= 0:
            raise UserError(f"fps must be positive, got {fps}")
        self.root = Path(root)
        self.template = template
        self.fps = float(fps)
        self._last: dict[str, int] = {}

    def path(self, video: str) -> Path:
        return self.root / self.template.format(video=video)

    def scan(self, videos: Iterable[str]) -> dict[str, int]:
        for video in videos:
            if video not in self._last:
                self._last[video] = self._count(video)
        return dict(self._last)

    def _count(self, video: str) -> int:
        path = self.path(video)
        if not path.is_file():
            raise UserError(f"video file {path} of video {video!r} does not exist")
        with _open(path) as (container, stream):
            duration = None
            if stream.frames and stream.average_rate:
                duration = stream.frames / float(stream.average_rate)
            elif stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / 1_000_000
            if duration is None:  # no header says (e.g. a raw .h264 stream): decode to count
                import av

                try:
                    decoded = sum(1 for _ in container.decode(stream))
                except av.FFmpegError as err:
                    raise UserError(f"cannot decode video file {path}: {err}") from None
                duration = decoded / float(stream.average_rate or self.fps)
        count = math.ceil(duration * self.fps - 1e-6)
        if count < 1:
            raise UserError(f"video file {path} has no frames")
        return count

    def check(self, video: str, numbers: np.ndarray) -> None:
        numbers = np.asarray(numbers).reshape(-1)  # (*shape) -> (N,) frame numbers
        missing = (numbers < 1) | (numbers > self._last[video])
        if missing.any():
            number = int(numbers[np.argmax(missing)])
            raise UserError(
                f"video file {self.path(video)} has no frame {number} at {self.fps:g} fps "
                f"(it has {self._last[video]})"
            )

    def read(self, video: str, numbers: np.ndarray) -> np.ndarray:
        numbers = np.asarray(numbers)
        wanted = np.unique(numbers).tolist()
        path = self.path(video)
        with _open(path) as (container, stream):
            # Slot n (from 1) takes the last frame shown before its end, (n - 1/2) / fps.
            decoded = _decode_at(container, stream, [(n - 0.5) / self.fps for n in wanted])
        by_number = dict(zip(wanted, decoded, strict=True))
        return _stack([by_number[n] for n in numbers.tolist()], f"video file {path}")


def quarter_turns(frame: Any) -> int:
    """Quarter turns counterclockwise (``np.rot90``'s k) that show a decoded PyAV frame upright: the
    rotation of its display matrix, which ffmpeg and players apply (a phone's portrait video is
    stored sideways). PyAV < 14 has no ``VideoFrame.rotation``: its frames are read as stored."""
    return round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4


def upright_rgb(frame: Any) -> np.ndarray:
    """A decoded PyAV frame as ``(H, W, 3)`` RGB, turned upright (`quarter_turns`)."""
    image = frame.to_ndarray(format="rgb24")
    turns = quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


class _open:
    """Context manager yielding (container, first video stream); errors become UserError."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> tuple[Any, Any]:
        import av

        try:
            self.container = av.open(str(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read video file {self.path}: {err}") from None
        if not self.container.streams.video:
            self.container.close()
            raise UserError(f"video file {self.path} has no video stream")
        return self.container, self.container.streams.video[0]

    def __exit__(self, *exc: object) -> None:
        self.container.close()


def _decode_at(container: Any, stream: Any, times: list[float]) -> list[np.ndarray]:
    """The RGB frame shown last before each of the sorted `times` (seconds from the stream start;
    the first frame for a time before it).

    Seeks to the key frame before the first time and decodes forward; decodes from the start
    instead when the seek lands after the first wanted frame.
    """
    import av

    start = stream.start_time or 0
    try:
        frames = None
        if times[0] > 0:
            container.seek(int(times[0] / stream.time_base) + start, stream=stream, backward=True)
            frames = _collect(container.decode(stream), stream, times, from_start=False)
        if frames is None:
            container.seek(start, stream=stream, backward=True)
            frames = _collect(container.decode(stream), stream, times, from_start=True)
    except av.FFmpegError as err:
        raise UserError(f"cannot decode video file {container.name}: {err}") from None
    if frames is None:
        raise UserError(f"video file {container.name} has no decodable frames")
    return frames


def _collect(
    decoded: Iterable[Any], stream: Any, times: list[float], from_start: bool
) -> list[np.ndarray] | None:
    """The last frame shown before each time (the first frame for times before it).

    Returns None when nothing is decoded, or when not `from_start` and the first decoded frame
    is not before times[0].
    """
    tolerance = 1e-3  # seconds; timestamps are rounded to the stream's time base
    start = stream.start_time or 0
    out: list[np.ndarray] = []
    previous, previous_rgb = None, None
    for frame in decoded:
        pts = frame.pts if frame.pts is not None else frame.dts
        time = float((pts - start) * stream.time_base) if pts is not None else 0.0
        if previous is None and not from_start and time >= times[0] - tolerance:
            return None
        while len(out) < len(times) and time >= times[len(out)] - tolerance:
            if previous_rgb is None:
                previous_rgb = upright_rgb(frame if previous is None else previous)
            out.append(previous_rgb)
        if len(out) == len(times):
            return out
        previous, previous_rgb = frame, None
    if previous is None:
        return None
    return out + [upright_rgb(previous)] * (len(times) - len(out))
