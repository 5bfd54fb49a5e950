"""Streaming decoding of a video file with PyAV, one frame at a time (SPEC section 1).

`VideoReader` yields the frames of a file's first video stream in presentation order, so memory
does not grow with the video's length; `probe_video` reads the header alone. Time comes from the
frames' timestamps (pts * time_base, counted from the first frame), not from ``index / fps``, so
variable-frame-rate videos keep their true times; repeated or backward timestamps are moved just
after the frame before. Corrupt packets and truncated files are decoded as far as possible, with a
`VideoDecodeWarning`. Frames are turned upright as players and ffmpeg show them: a phone video
stores its portrait frames sideways with a rotation in its display matrix. Keyframe clips are cut
from these frames by `evad.inference.clips`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from evad.data.frames import quarter_turns
from evad.errors import UserError, outside_stacklevel

TIME_EPS = 1e-6  # seconds; timestamps closer than this are equal


class VideoDecodeWarning(UserWarning):
    """A video could only be decoded in part (corrupt packets or a truncated file)."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream.

    Attributes:
        path: The file.
        height, width: Frame size in pixels, as shown (after `rotation`).
        fps: Average frame rate (for variable-rate videos only a summary; timestamps decide).
        frame_rate: `fps` as an exact fraction, for writing a video at the same rate.
        time_base: Unit of the stream's timestamps in seconds (None if unknown).
        declared_frames: Frame count in the container header, 0 where it does not say.
        duration: Length in seconds, None where unknown.
        codec: Decoder name.
        rotation: Degrees counterclockwise (0, 90, 180 or 270) by which the decoded frames are
            turned to show them upright, from the display matrix of the stream's first frame.
    """

    path: Path
    height: int
    width: int
    fps: float
    frame_rate: Fraction
    time_base: Fraction | None
    declared_frames: int
    duration: float | None
    codec: str
    rotation: int = 0


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position in presentation order.
        time: Seconds since the first frame.
        pts: Presentation timestamp in the stream's time base (None if the file has none).
        image: (H, W, 3) uint8 RGB, or whatever the reader's transform made of it.
    """

    index: int
    time: float
    pts: int | None
    image: np.ndarray


def _open_container(path: Path):
    import av

    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a video file")
    if not path.is_file():
        raise UserError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise UserError(f"{path}: not a readable video file ({err.strerror or err})") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"{path}: the file has no video stream")
    return container


def _display_quarter_turns(path: Path) -> int:
    """Quarter turns counterclockwise (``np.rot90``'s k) that show the first video stream upright:
    the rotation of its first decoded frame's display matrix, which ffmpeg and players apply (a
    phone's portrait video is stored sideways). 0 where no frame decodes (the reader reports that)."""
    import av

    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                return quarter_turns(frame)
    except (av.FFmpegError, ValueError):
        pass
    return 0


class VideoReader:
    """Decode a video file's frames one at a time, in presentation order.

    Corrupt packets are skipped and a file that ends early is read as far as possible; both give a
    `VideoDecodeWarning` and set `truncated`. A file with no decodable frame is a `UserError`.

    Args:
        path: Video file.

    Raises:
        UserError: If the file is missing, is not a video, or has no video stream with a frame size.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._container = _open_container(self.path)
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._turns = _display_quarter_turns(self.path)
        self.info = self._read_info()
        if not (self.info.height and self.info.width):  # probing decoded nothing (e.g. a damaged raw stream)
            self._container.close()
            raise UserError(f"{self.path}: no frame size in the video stream; nothing in it can be decoded")
        self.truncated = False
        self.num_decoded = 0

    def _read_info(self) -> VideoInfo:
        s = self._stream
        rate = s.average_rate or s.guessed_rate or s.base_rate or Fraction(30)
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / 1_000_000  # AV_TIME_BASE
        height, width = s.codec_context.height, s.codec_context.width
        if self._turns % 2:  # sideways: the frames are shown with height and width swapped
            height, width = width, height
        return VideoInfo(
            path=self.path,
            height=height,
            width=width,
            fps=float(rate),
            frame_rate=Fraction(rate),
            time_base=Fraction(s.time_base) if s.time_base else None,
            declared_frames=int(s.frames or 0),
            duration=duration,
            codec=s.codec_context.name,
            rotation=90 * self._turns,
        )

    def frames(self, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[Frame]:
        """Yield every decodable frame, with `transform` applied to each RGB image.

        One pass per reader: open another `VideoReader` to decode the file again.

        Raises:
            UserError: If not a single frame can be decoded (raised once the stream is exhausted).
        """
        import av

        time_base = self._stream.time_base
        first_pts = None
        last_time = -1.0
        bad_packets = 0
        ended_early = None
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as err:
                ended_early = err.strerror or str(err)
                break
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                bad_packets += 1
                continue
            for frame in decoded:
                if frame.pts is not None and time_base is not None:
                    first_pts = frame.pts if first_pts is None else first_pts
                    time = float((frame.pts - first_pts) * time_base)
                else:
                    time = self.num_decoded / self.info.fps
                # Repeated or backward timestamps (broken muxers) must not reorder keyframes.
                time = max(time, last_time + TIME_EPS) if self.num_decoded else time
                last_time = time
                image = frame.to_ndarray(format="rgb24")
                if self._turns:  # (H, W, 3) as stored -> as shown
                    image = np.ascontiguousarray(np.rot90(image, self._turns))
                yield Frame(self.num_decoded, time, frame.pts, transform(image) if transform else image)
                self.num_decoded += 1
        self._check_complete(bad_packets, ended_early, last_time)

    def _check_complete(self, bad_packets: int, ended_early: str | None, last_time: float) -> None:
        n, info = self.num_decoded, self.info
        if n == 0:
            raise UserError(f"{self.path}: no decodable video frames")
        reasons = []
        if ended_early:
            reasons.append(f"reading stopped: {ended_early}")
        if bad_packets:
            reasons.append(f"{bad_packets} corrupt packet(s) skipped")
        if info.declared_frames > n:
            reasons.append(f"the header announces {info.declared_frames} frames")
        elif not info.declared_frames and info.duration and last_time + 2.5 / info.fps < info.duration:
            reasons.append(f"the header announces {info.duration:.2f} s")
        if reasons:
            self.truncated = True
            warnings.warn(
                f"{self.path}: decoded {n} frames ({'; '.join(reasons)}); using what could be decoded",
                VideoDecodeWarning,
                stacklevel=outside_stacklevel(),
            )

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_video(path: str | Path) -> VideoInfo:
    """Header information of a video file without decoding it.

    Raises:
        UserError: If the file is missing, is not a video, or has no video stream with a frame size.
    """
    with VideoReader(path) as reader:
        return reader.info
