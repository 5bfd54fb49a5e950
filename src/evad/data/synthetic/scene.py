"""Everything that is not an actor (background, clutter, distractors, camera shake), and the
simulation of one whole video."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from evad.data.synthetic.config import SynthConfig
from evad.data.synthetic.figures import _PROP_PALETTE, _Actor
from evad.data.synthetic.planner import _plan_actors

# ----------------------------------------------------------------------------------------------
# Background, distractors, camera
# ----------------------------------------------------------------------------------------------


@dataclass
class _Shape:
    """A non-actor thing: 'blob' (ellipse) or 'box' (rotated rectangle), moving over time."""

    kind: str
    center: np.ndarray  # (T, 2) world
    size: tuple[float, float]
    angle: np.ndarray  # (T,) degrees
    color: tuple[int, ...]


def _bounce(
    start: np.ndarray, velocity: np.ndarray, t: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Positions (T, 2) of a point moving at constant velocity, reflected at the [lo, hi] walls."""
    span = hi - lo
    travelled = (start - lo) + velocity * t[:, None]
    return lo + span - np.abs(np.mod(travelled, 2 * span) - span)


def _background(
    rng: np.random.Generator, height: int, width: int, shapes: tuple[int, int] = (25, 45)
) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = xx * math.cos(angle) + yy * math.sin(angle)
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    c0, c1 = rng.uniform(40, 215, (2, 3)).astype(np.float32)
    img = c0 + (c1 - c0) * ramp[..., None]
    low = rng.normal(0, 28, (height // 12 + 2, width // 12 + 2, 3)).astype(np.float32)
    img += cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    scale = min(height, width)
    for _ in range(int(rng.integers(*shapes))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(width)), int(rng.integers(height))
        kind = rng.integers(4)
        if kind == 0:
            w, h = rng.integers(3, scale // 4, 2)
            cv2.rectangle(canvas, (cx, cy), (cx + int(w), cy + int(h)), color, -1)
        elif kind == 1:
            cv2.circle(canvas, (cx, cy), int(rng.integers(2, scale // 10)), color, -1, cv2.LINE_AA)
        elif kind == 2:
            end = (
                cx + int(rng.integers(-scale // 3, scale // 3)),
                cy + int(rng.integers(-scale // 3, scale // 3)),
            )
            cv2.line(canvas, (cx, cy), end, color, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            pts = (
                np.array([cx, cy]) + rng.integers(-scale // 6, scale // 6, (int(rng.integers(3, 6)), 2))
            ).astype(np.int32)
            cv2.fillPoly(canvas, [pts], color, cv2.LINE_AA)
    texture = rng.normal(0, 7, (height, width, 3))
    canvas = np.clip(canvas + texture, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(canvas, (3, 3), 0.6)


def _distractors(
    rng: np.random.Generator, cfg: SynthConfig, t: np.ndarray
) -> tuple[list[_Shape], list[_Shape]]:
    """Moving shapes behind the actors, and occluders that pass in front of them."""
    height, width = cfg.size
    lo, hi = np.array([0.0, 0.0]), np.array([width, height], float)
    behind = []
    for kind, count in (
        ("blob", rng.integers(2, 5)),
        ("bar", rng.integers(1, 4)),
        ("prop", rng.integers(1, 3)),
    ):
        for _ in range(count):
            speed = rng.uniform(0.05, 0.35) * height
            heading = rng.uniform(0, 2 * math.pi)
            center = _bounce(
                rng.uniform(lo, hi), speed * np.array([math.cos(heading), math.sin(heading)]), t, lo, hi
            )
            spin = rng.uniform(-90, 90) * t + rng.uniform(0, 180)
            if kind == "blob":
                size = tuple(rng.uniform(0.03, 0.1, 2) * height)
                color = tuple(int(c) for c in rng.integers(0, 256, 3))
            elif kind == "bar":
                size = (rng.uniform(0.15, 0.35) * height, rng.uniform(0.02, 0.05) * height)
                color = tuple(int(c) for c in rng.integers(0, 256, 3))
            else:  # the same boxes actors carry, floating free
                size = (rng.uniform(0.03, 0.07) * height, rng.uniform(0.04, 0.09) * height)
                color, spin = _PROP_PALETTE[rng.integers(len(_PROP_PALETTE))], spin * 0.2
            behind.append(_Shape("blob" if kind == "blob" else "box", center, size, spin, color))
    front = []
    for _ in range(rng.integers(1, 3)):
        start, length = rng.uniform(-1, cfg.seconds - 1), rng.uniform(1.5, 4.0)
        progress = (t - start) / length
        if rng.uniform() < 0.5:  # a pole sweeping across
            w = rng.uniform(0.04, 0.1) * width
            x = (
                -w + progress * (width + 2 * w)
                if rng.uniform() < 0.5
                else width + w - progress * (width + 2 * w)
            )
            center = np.stack([x, np.full_like(t, height / 2)], -1)
            size, angle = (w, 1.5 * height), np.full_like(t, rng.uniform(-10, 10))
            front.append(_Shape("box", center, size, angle, tuple(int(c) for c in rng.integers(0, 256, 3))))
        else:  # a large blob drifting through
            r = rng.uniform(0.1, 0.2) * height
            y0, y1 = rng.uniform(0.3, 1.0, 2) * height
            x = -r + progress * (width + 2 * r)
            center = np.stack([x, y0 + (y1 - y0) * progress], -1)
            front.append(
                _Shape(
                    "blob",
                    center,
                    (r, r * rng.uniform(0.6, 1.0)),
                    np.zeros_like(t),
                    tuple(int(c) for c in rng.integers(0, 256, 3)),
                )
            )
    return behind, front


def _camera(rng: np.random.Generator, cfg: SynthConfig, t: np.ndarray) -> np.ndarray:
    """Integer scene offsets (T, 2): slow sway plus per-frame shake."""
    height, width = cfg.size
    offset = np.zeros((len(t), 2))
    for axis, amp in ((0, 0.02 * width), (1, 0.015 * height)):
        for _ in range(2):
            offset[:, axis] += amp * np.sin(
                2 * math.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * math.pi)
            )
        offset[:, axis] += rng.normal(0, 0.5, len(t))
    return np.round(offset).astype(int)


# ----------------------------------------------------------------------------------------------
# One video: simulation and rendering
# ----------------------------------------------------------------------------------------------


@dataclass
class SynthVideo:
    """One simulated video, before rendering.

    Attributes:
        name: video id.
        size: frame height and width.
        fps: frames per second.
        boxes: (A, T, 4) tight person boxes x1, y1, x2, y2 in pixels (continuous coordinates,
            0 = left edge of the first pixel), clipped to the frame.
        labels: (A, T, C) per-frame multi-hot labels; column c is class id c + 1.
    """

    name: str
    size: tuple[int, int]
    fps: int
    boxes: np.ndarray
    labels: np.ndarray
    actors: list[_Actor] = field(repr=False)
    camera: np.ndarray = field(repr=False)
    background: np.ndarray = field(repr=False)
    behind: list[_Shape] = field(repr=False)
    front: list[_Shape] = field(repr=False)
    noise: np.ndarray = field(repr=False)
    noise_index: np.ndarray = field(repr=False)


def simulate_video(config: SynthConfig, seed: int, index: int) -> SynthVideo:
    """Simulate video `index` of the dataset with `seed` (independent of how many videos there are)."""
    rng = np.random.default_rng([seed, index])
    t = np.arange(config.num_frames) / config.fps
    height, width = config.size
    actors = _plan_actors(rng, config, index)
    behind, front = _distractors(rng, config, t)
    camera = _camera(rng, config, t)
    margin = int(np.abs(camera).max()) + 1
    background = _background(rng, height + 2 * margin, width + 2 * margin, config.background_shapes)
    noise = np.round(rng.normal(0, 2.5, (4, height, width, 3))).astype(np.int16)
    noise_index = rng.integers(0, 4, len(t))
    boxes = np.stack([a.boxes for a in actors]) - np.tile(camera, 2)[None]
    boxes = np.clip(boxes, 0, [width, height, width, height])
    return SynthVideo(
        f"synth_{index:04d}",
        config.size,
        config.fps,
        boxes,
        np.stack([a.labels for a in actors]),
        actors,
        camera,
        background,
        behind,
        front,
        noise,
        noise_index,
    )
