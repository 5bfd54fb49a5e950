"""The annotated video of `evad detect`: each keyframe's boxes, track ids and actions drawn on every
frame up to the next keyframe, encoded at the input's frame count and timestamps.

This is the second of `detect_video`'s two streaming passes: it decodes the input again, enlarges each
frame by a whole factor (labels on a 128-pixel frame would cover a third of it), draws and encodes
H.264 where PyAV has libx264, MPEG-4 part 2 otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evad.errors import outside_stacklevel
from evad.inference.video import VideoDecodeWarning, VideoReader
from evad.viz.draw import draw_detections

if TYPE_CHECKING:
    from evad.inference.results import KeyframeResult

_MAX_LABEL_ACTIONS = 3  # actions listed on a box in the video; the JSON has all above threshold


def _box_labels(kf: KeyframeResult, k: int, class_names: Sequence[str], action_threshold: float) -> list[str]:
    scores = kf.action_scores[k]
    above = [c for c in np.argsort(-scores, kind="stable") if scores[c] >= action_threshold]
    lines = [f"#{kf.track_ids[k]} person {kf.person_scores[k]:.2f}"]
    lines += [f"{class_names[c]} {scores[c]:.2f}" for c in above[:_MAX_LABEL_ACTIONS]]
    if len(above) > _MAX_LABEL_ACTIONS:
        lines.append(f"+{len(above) - _MAX_LABEL_ACTIONS} more")
    return lines


def has_libx264() -> bool:
    """Whether this PyAV build can encode H.264 (its wheels ship libx264)."""
    import av

    try:
        av.codec.Codec("libx264", "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


# The largest short side the annotated video may be asked for (8K video's); far larger asks ended in
# OpenCV's out-of-memory error.
MAX_VIDEO_MIN_SIDE = 4320


def annotation_scale(height: int, width: int, min_side: int) -> int:
    """Smallest whole factor that enlarges a `height` x `width` frame to a short side of at least
    `min_side` pixels (1 if it already has it, or `min_side` is 0)."""
    return max(1, -(-min_side // min(height, width)))


def _pick_encoder(width: int, height: int) -> tuple[str, str]:
    """(codec, pixel format) for the annotated video: H.264 where available, else MPEG-4 part 2."""
    if has_libx264():
        # 4:2:0 needs even sizes; 4:4:4 keeps an odd-sized frame exact (not every player shows it).
        return "libx264", "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    warnings.warn(
        "this PyAV build has no H.264 encoder; the annotated video is MPEG-4 part 2",
        stacklevel=outside_stacklevel(),
    )
    return "mpeg4", "yuv420p"


def write_annotated(
    path: Path,
    out: Path,
    keyframes: Sequence[KeyframeResult],
    class_names: Sequence[str],
    action_threshold: float,
    scale: int,
    progress: bool,
) -> tuple[str, int]:
    """Second pass: enlarge `scale` times, draw and encode every frame; returns (codec, frames written)."""
    import av
    import cv2
    from tqdm import tqdm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VideoDecodeWarning)  # already reported by the first pass
        reader = VideoReader(path)
    info = reader.info
    width, height = scale * info.width, scale * info.height
    codec, pix_fmt = _pick_encoder(width, height)
    time_base = info.time_base or Fraction(1, 90000)
    if codec == "mpeg4" and time_base.denominator > 65535:
        # MPEG-4 part 2 time bases are 16-bit: count in frame periods (exact for constant rates).
        period = 1 / info.frame_rate
        time_base = period if period.denominator <= 65535 else Fraction(1, 1000)
    written = 0
    with reader, av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(codec, rate=info.frame_rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = time_base  # keep the input's timestamps (variable rate too)
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "20"}
        else:  # MPEG-4's default bit rate blurs everything; about 0.15 bit per pixel
            stream.bit_rate = max(200_000, round(0.15 * width * height * info.fps))
        current = -1
        last_pts = -1
        frames = tqdm(total=info.declared_frames or None, desc="annotate", unit="frame", disable=not progress)
        with frames, warnings.catch_warnings():
            warnings.simplefilter("ignore", VideoDecodeWarning)
            for frame in reader.frames():
                while current + 1 < len(keyframes) and keyframes[current + 1].frame <= frame.index:
                    current += 1  # hold each keyframe's detections until the next keyframe
                image = np.ascontiguousarray(frame.image)
                if scale > 1:  # (H, W, 3) -> (scale * H, scale * W, 3)
                    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
                if current >= 0:
                    kf = keyframes[current]
                    labels = [_box_labels(kf, k, class_names, action_threshold) for k in range(len(kf.boxes))]
                    draw_detections(image, scale * kf.boxes, labels, kf.track_ids)
                out_frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                pts = round(frame.time / time_base)
                out_frame.pts = last_pts = max(pts, last_pts + 1)
                out_frame.time_base = time_base
                for packet in stream.encode(out_frame):
                    container.mux(packet)
                written += 1
                frames.update()
        for packet in stream.encode():
            container.mux(packet)
    return codec, written
