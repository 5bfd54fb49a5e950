"""From decoded frames to the model's input, shared by detection and the pictures (SPEC section 1).

Frames are resized as they are decoded (short side to ``short_side``, long side at most
``max_long_side``), so the sliding clip window holds small images; clips are normalised and
zero-padded bottom/right to a multiple of 32 only when batched. `evad detect` and
`evad visualize` cut their clips with the same functions, so a picture shows exactly what
detection saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from evad.data.transforms import resized_size
from evad.errors import UserError
from evad.inference.clips import ClipSampler, KeyframeClip
from evad.inference.video import VideoInfo, VideoReader


@dataclass(frozen=True)
class InputSettings:
    """How a model wants its clips; `evad train` checkpoints store them in their data config.

    Attributes:
        short_side: Input short side after resizing.
        max_long_side: Cap on the long side after resizing.
        sampling_rate: Frame step inside a clip (4 for 16 x 4 clips), in frames at `clip_fps`.
        clip_fps: Frame rate of the training clips (the data config's ``fps``; 30 for AVA): clips
            are cut at this rate whatever the video's own rate (`evad.inference.clips`).
        mean, std: Pixel normalisation of RGB in [0, 1].
    """

    short_side: int = 256
    max_long_side: int = 1333
    sampling_rate: int = 4
    clip_fps: float = 30.0
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)


def frame_resizer(
    height: int, width: int, short_side: int, max_long_side: int = 1333
) -> tuple[tuple[int, int], Callable[[np.ndarray], np.ndarray]]:
    """The input size of (height, width) frames and a function resizing one RGB frame to it."""
    h, w = resized_size(height, width, short_side, max_long_side)

    def resize(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)

    return (h, w), resize


def clips_to_batch(
    clips: Sequence[KeyframeClip],
    mean: Sequence[float],
    std: Sequence[float],
    size_divisor: int = 32,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Stack resized uint8 clips into the model's input: normalised, zero-padded bottom/right.

    Returns:
        (B, 3, T, H', W') float clips, H' and W' the next multiples of `size_divisor`.
    """
    x = torch.from_numpy(np.stack([c.frames for c in clips])).to(device)  # (B, T, H, W, 3) uint8
    x = x.permute(0, 4, 1, 2, 3).float().div_(255)  # (B, T, H, W, 3) -> (B, 3, T, H, W)
    # mean and std (3,) -> (1, 3, 1, 1, 1)
    x = (x - x.new_tensor(mean).view(1, 3, 1, 1, 1)) / x.new_tensor(std).view(1, 3, 1, 1, 1)
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % size_divisor, -w % size_divisor
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


@dataclass
class ClipAtTime:
    """One keyframe clip read from a video file.

    Attributes:
        clip: The resized uint8 frames and where they come from.
        info: The video's header information.
        input_size: (height, width) of the resized frames (before padding).
    """

    clip: KeyframeClip
    info: VideoInfo
    input_size: tuple[int, int]


def read_keyframe_clip(
    path: str | Path,
    time: float | None = None,
    *,
    num_frames: int = 16,
    settings: InputSettings | None = None,
) -> ClipAtTime:
    """Decode the clip around the keyframe nearest to `time`, resized as detection resizes it.

    Decoding streams with the same sliding window as `evad detect` and stops as soon as the clip
    is complete, so a clip early in a long video is cheap and memory never depends on the length.

    Args:
        path: Video file.
        time: Keyframe time in seconds from the first frame; the middle frame's if None.
        num_frames: Clip length T (the backbone's `num_frames`).
        settings: Resize rule, clip stride and clip frame rate (`InputSettings` defaults if None).

    Raises:
        UserError: If the file cannot be read or `time` lies outside the video.
    """
    path, settings = Path(path), settings or InputSettings()
    with VideoReader(path) as reader:
        info = reader.info
        duration = info.duration if info.duration is not None else _decoded_duration(path)
        if time is None:  # the middle frame: half a 1-frame video's duration is past its only frame
            time = round(duration * info.fps) // 2 / info.fps
        elif not 0 <= time < duration:
            raise UserError(f"{path}: --time {time:g} s is outside the video (it lasts {duration:.2f} s)")
        size, resize = frame_resizer(info.height, info.width, settings.short_side, settings.max_long_side)
        sampler = ClipSampler(
            times=[time],
            num_frames=num_frames,
            sampling_rate=settings.sampling_rate,
            clip_fps=settings.clip_fps,
        )
        clips = sampler.clips(reader.frames(resize))
        try:
            clip = next(clips, None)
        finally:
            clips.close()  # stop decoding: the rest of the video is not needed
    if clip is None:  # only where the header's duration overstates what can be decoded
        raise UserError(f"{path}: no decodable frame near {time:g} s")
    return ClipAtTime(clip, info, size)


def _decoded_duration(path: Path) -> float:
    """Length in seconds of a video whose header does not say: the last frame's time plus one period."""
    with VideoReader(path) as reader:
        last = 0.0
        for frame in reader.frames(lambda image: image[:1, :1]):  # keep nothing but the timestamp
            last = frame.time
        return last + 1 / reader.info.fps
