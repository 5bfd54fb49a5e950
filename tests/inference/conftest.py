"""Tiny test videos written with PyAV: frame i is a flat grey of level 3 * i, so decoded frames
can be identified by their mean (lossless H.264, crf 0)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

GREY_STEP = 3


def grey_index(image: np.ndarray) -> int:
    """The frame index a flat grey test frame encodes."""
    return round(float(image.mean()) / GREY_STEP)


def write_video(
    path: Path,
    num_frames: int = 70,
    size: tuple[int, int] = (64, 80),
    fps: int = 30,
    *,
    times_ms: Sequence[int] | None = None,
    noise: bool = False,
    faststart: bool = False,
    container_format: str = "mp4",
    rotation: int = 0,
) -> Path:
    """Write an H.264 MP4; `times_ms` gives each frame's timestamp (variable frame rate); a
    `rotation` (degrees counterclockwise) goes in the display matrix, as phones store portrait video."""
    import av

    h, w = size
    rng = np.random.default_rng(0)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=container_format, options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        if rotation:
            if not hasattr(stream, "set_display_rotation"):
                pytest.skip("this PyAV cannot write rotation metadata (PyAV >= 14 can)")
            stream.set_display_rotation(rotation)
        if times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(num_frames if times_ms is None else len(times_ms)):
            if noise:
                image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            else:
                image = np.full((h, w, 3), GREY_STEP * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """70 frames (2.33 s) of 64 x 80 at 30 fps."""
    return write_video(tmp_path / "clip.mp4")


@pytest.fixture
def make_video():
    """`write_video` for tests that need another length, size, rate or content."""
    return write_video


@pytest.fixture
def frame_number():
    """`grey_index`: the frame index a decoded test frame shows."""
    return grey_index
