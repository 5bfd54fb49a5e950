"""The synthetic benchmark's classes and settings (`evad.data.synthetic`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ClassKind = Literal["pose", "motion", "object", "interaction"]


@dataclass(frozen=True)
class SynthClass:
    """One action class of the synthetic benchmark."""

    id: int
    name: str
    kind: ClassKind


SYNTH_CLASSES: tuple[SynthClass, ...] = (
    SynthClass(1, "stand", "pose"),
    SynthClass(2, "sit", "pose"),
    SynthClass(3, "lie down", "pose"),
    SynthClass(4, "walk", "motion"),
    SynthClass(5, "run", "motion"),
    SynthClass(6, "jump", "motion"),
    SynthClass(7, "wave", "motion"),
    SynthClass(8, "fall down", "motion"),
    SynthClass(9, "turn around", "motion"),
    SynthClass(10, "carry/hold (an object)", "object"),
    SynthClass(11, "talk to (a person)", "interaction"),
    SynthClass(12, "hand shake", "interaction"),
    SynthClass(13, "point to (a person)", "interaction"),
)
# Label columns (0-based, = id - 1).
STAND, SIT, LIE, WALK, RUN, JUMP, WAVE, FALL, TURN, CARRY, TALK, SHAKE, POINT = range(len(SYNTH_CLASSES))


@dataclass(frozen=True)
class SynthConfig:
    """World and output settings; `generate` arguments override `size`.

    Attributes:
        size: frame height and width in pixels.
        seconds: video length.
        fps: frames per second.
        clip_frames: frames per clip of the model (SPEC section 1), used to pick keyframes.
        clip_stride: temporal stride of the clip.
        extra_actors: (min, max) random actors added to the 4-6 scheduled ones (2 for the focus
            interaction, 2 for the focus motions, a sitter and a lying actor where missing).
        max_actors: at most this many actors per video (the extras are dropped first).
        val_fraction: share of videos (the last ones) in the validation / test split.
        jpeg_quality: OpenCV JPEG quality.
        timestamp_start: AVA second of the first frame.
        background_shapes: (min, max) random rectangles, discs, lines and polygons painted on
            each background (the clutter; the range is half-open like `numpy.random.integers`).
        actor_height: standing height of the farthest and the nearest actors, as fractions of the
            frame height.
    """

    size: tuple[int, int] = (128, 171)
    seconds: int = 8
    fps: int = 30
    clip_frames: int = 16
    clip_stride: int = 4
    extra_actors: tuple[int, int] = (0, 1)
    max_actors: int = 6
    val_fraction: float = 0.25
    jpeg_quality: int = 90
    timestamp_start: int = 0
    background_shapes: tuple[int, int] = (25, 45)
    actor_height: tuple[float, float] = (0.3, 0.55)

    @property
    def num_frames(self) -> int:
        return self.seconds * self.fps

    def keyframe_seconds(self) -> list[int]:
        """Video-relative seconds whose whole clip window lies inside the video."""
        before = (self.clip_frames // 2) * self.clip_stride
        after = (self.clip_frames // 2 - 1) * self.clip_stride
        first = math.ceil(before / self.fps)
        last = (self.num_frames - 1 - after) // self.fps
        return list(range(first, last + 1))


@dataclass
class SynthSummary:
    """What `generate` wrote."""

    out_dir: Path
    videos: int
    train_videos: int
    val_videos: int
    frames: int
    keyframes: int
    boxes: int
    label_rows: int
    tubes: int
    class_counts: dict[str, int]
    seconds_taken: float
