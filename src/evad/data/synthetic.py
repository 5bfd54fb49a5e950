"""A procedurally generated action-detection benchmark that exercises the real AVA and UCF loaders.

`evad data synth` writes a small dataset in the same on-disk formats as AVA (SPEC section 9: CSV,
label map, exclusions, JPEG frame folders) and UCF101-24 / JHMDB (ground-truth pickle with dense
tubes, frames numbered from 1), so the demo, the tests and CI run the whole system without
downloading anything.

World. Each video shows 4-6 articulated figures ("actors") on a cluttered, textured background
(colour gradient, low-frequency colour noise, random rectangles, discs and line segments), with
moving distractors that are not people (blobs, bars, free-floating coloured boxes), foreground
occluders that pass in front of the actors, camera jitter (a global translation of the whole scene)
and actors of different sizes (bigger ones lower in the frame, as with a ground plane). A figure is a
small 3-D skeleton (hips, knees, feet, shoulders, elbows, hands, a head whose face and hair halves
show where it faces) seen orthographically after a rotation about the vertical axis (yaw), so that
turning, facing and depth order are all visible. A person box is the tight box of the drawn figure
(limb thickness and head included; carried objects and speech marks excluded) and covers occluded
parts too, as AVA boxes do.

Classes (`SYNTH_CLASSES`, ids are 1-based like AVA) come in four groups, each testing one thing:

* pose (stand, sit, lie down): decidable from the keyframe alone; one per actor and frame.
* motion (walk, run, jump, wave, fall down, turn around): NOT decidable from one frame. Every
  single-frame appearance of a moving actor is also the appearance of a static one: a stander's
  legs and arms are frozen at a random phase of the same gait function walkers and runners animate
  (run differs from walk only in speed and stride frequency), standers may keep an arm raised exactly
  like a waving arm, face any direction as a turner passes through, float above the (invisible)
  ground like a jumper, and lying or getting-up actors look like falling ones. Only the 16-frame clip
  tells them apart, which is what keyframe-centric token pruning must preserve.
* object (carry/hold an object): a coloured box attached to a hand; free-floating boxes of the same
  colours are distractors, so the detector must see the attachment.
* interaction (talk to, hand shake, point to): decided by context outside the actor's own box. "Talk
  to" needs speech marks AND another actor in front facing back (lone speakers are not labelled);
  "hand shake" needs the partner's hand meeting the actor's; "point to" needs a straight arm whose
  ray hits another actor's box (the same gesture aimed at empty space is not labelled). This is what
  the context refinement decoder (SPEC section 4) is for.

Every actor has one pose label and zero or more others per frame. Labels are computed per frame;
AVA rows sample them at the keyframes, the UCF pickle keeps every frame.

Time. Videos are `seconds` long at `fps` (default 8 s at 30 fps). Frame files are numbered from 1:
file number n shows time (n - 1) / fps. AVA keyframe `second` s maps to the 0-based frame index
(s - timestamp_start) * fps, i.e. file `(s - timestamp_start) * fps + 1` (the AVA rule of SPEC section
9 with the 15-minute offset 900 replaced by `timestamp_start`, 0 by default). Only seconds whose
whole 16x4 clip window (offsets -32 ... +28 frames) lies inside the video are keyframes (seconds
2 ... 7 for 8 s at 30 fps), so no clip needs clamping. Each video has focus classes scheduled
around a keyframe: video i gets the motion pair (walk, wave), (run, fall down) or (jump, turn around)
and the interaction talk to, hand shake or point to, by i mod 3, plus a sitter and a carried object,
so any three consecutive videos (and so each split of at least three videos) hold every class.

Boxes. In the CSV, x1 y1 x2 y2 are fractions of the frame width and height; in the pickle they are the
same boxes in pixels (fraction x width, continuous coordinates: 0 is the left edge of the first
pixel), so `csv * (W, H)` equals the pickle box to the CSV's 3 decimals. The pickle's
`train_videos` / `test_videos` hold one split (the CSV's train / val videos) and its label indices
are 0-based (`id - 1`).

Output (in `out_dir`, written to a hidden sibling then renamed, so a partial run never looks done)::

    synth.json                              config, classes, splits, layouts, counts
    annotations/train.csv, val.csv          AVA rows: video, second, x1, y1, x2, y2 (0-1), action, person
    annotations/labelmap.pbtxt              item { name: "..." id: N }
    annotations/{train,val}_excluded_timestamps.csv   empty
    annotations/synth-GT.pkl                UCF101-24 style ground truth (label index = id - 1)
    frames/<video>/<video>_%06d.jpg         AVA layout
    rawframes/<video>/img_%05d.jpg          MMAction2 layout (hard links)
    rgb-images/<video>/%05d.jpg             UCF101-24 layout (hard links)

Example::

    >>> from evad.data.synthetic import generate
    >>> summary = generate("synth", num_videos=16, seed=0)  # ~6 s of one CPU core, 47 MB
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from tqdm import tqdm

from evad.errors import UserError
from evad.fileio import folder_entries, make_dirs

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


# ----------------------------------------------------------------------------------------------
# Figure model
# ----------------------------------------------------------------------------------------------

# Body proportions as fractions of the standing height h.
_HEAD_R, _NECK, _TORSO, _THIGH, _SHIN, _UPPER, _FORE = 0.085, 0.11, 0.30, 0.24, 0.23, 0.16, 0.15
_SHOULDER_W, _HIP_W = 0.07, 0.045
# Keypoints.
HIP, NECK, HEAD, HIP_R, KNEE_R, FOOT_R, HIP_L, KNEE_L, FOOT_L, SH_R, ELB_R, HAND_R, SH_L, ELB_L, HAND_L = (
    range(15)
)
_LIMBS = ((HIP_R, KNEE_R, FOOT_R), (HIP_L, KNEE_L, FOOT_L), (SH_R, ELB_R, HAND_R), (SH_L, ELB_L, HAND_L))
_PROP_PALETTE = ((0, 0, 230), (0, 210, 255), (230, 0, 230), (0, 220, 0), (255, 140, 0), (255, 255, 0))
_SKIN = ((140, 170, 225), (110, 140, 200), (70, 100, 150), (60, 80, 115))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _bout(t: np.ndarray, start: float, end: float, rise: float = 0.3) -> np.ndarray:
    """Weight rising 0 -> 1 over [start, start + rise] and falling back over [end - rise, end]."""
    return _smoothstep((t - start) / rise) * _smoothstep((end - t) / rise)


def _gait(phase: np.ndarray, amp: float, arm_amp: float, elbow: float) -> tuple[np.ndarray, np.ndarray]:
    """Leg and arm angles of the walk cycle at `phase`; a static actor is frozen at one phase.

    Angles are measured from straight down, forward positive; a knee bend swings the shin back and an
    elbow bend swings the forearm forward. Returns legs (T, 4) = hip_r, knee_r, hip_l, knee_l and arms
    (T, 4) = shoulder_r, elbow_r, shoulder_l, elbow_l.
    """
    s, c = np.sin(phase), np.cos(phase)
    legs = np.stack(
        [amp * s, amp * (0.2 + 0.9 * np.maximum(c, 0)), -amp * s, amp * (0.2 + 0.9 * np.maximum(-c, 0))], -1
    )
    arms = np.stack(
        [-arm_amp * s, elbow + 0.3 * arm_amp * (1 - s), arm_amp * s, elbow + 0.3 * arm_amp * (1 + s)], -1
    )
    return legs, arms


def _skeleton(h: float, legs: np.ndarray, arms: np.ndarray, lean: np.ndarray, tilt: np.ndarray) -> np.ndarray:
    """Body-frame joints (T, 15, 3) as (forward u, up v, right w), standing on v = 0.

    `lean` bends the torso forward at the hips; `tilt` rotates the whole body forward about the hips
    (a fall), after which the lowest joint is put back on the ground.
    """
    num = legs.shape[0]
    p = np.zeros((num, 15, 3))

    def segment(start: np.ndarray, length: float, angle: np.ndarray) -> np.ndarray:
        return start + length * h * np.stack([np.sin(angle), -np.cos(angle), np.zeros_like(angle)], -1)

    up = np.stack([np.sin(lean), np.cos(lean), np.zeros_like(lean)], -1)
    p[:, NECK] = _TORSO * h * up
    p[:, HEAD] = p[:, NECK] + _NECK * h * up
    for side, sign in ((0, 1.0), (1, -1.0)):
        hip_i, knee_i, foot_i = _LIMBS[side]
        p[:, hip_i, 2] = sign * _HIP_W * h
        p[:, knee_i] = segment(p[:, hip_i], _THIGH, legs[:, 2 * side])
        p[:, foot_i] = segment(p[:, knee_i], _SHIN, legs[:, 2 * side] - legs[:, 2 * side + 1])
        sh_i, elb_i, hand_i = _LIMBS[2 + side]
        p[:, sh_i] = p[:, NECK] + np.array([0.0, 0.0, sign * _SHOULDER_W * h])
        upper = arms[:, 2 * side] + lean
        p[:, elb_i] = segment(p[:, sh_i], _UPPER, upper)
        p[:, hand_i] = segment(p[:, elb_i], _FORE, upper + arms[:, 2 * side + 1])
    c, s = np.cos(tilt)[:, None], np.sin(tilt)[:, None]
    u, v = p[..., 0].copy(), p[..., 1].copy()
    p[..., 0], p[..., 1] = u * c + v * s, v * c - u * s
    p[..., 1] -= p[..., 1].min(axis=1, keepdims=True)
    return p


@dataclass
class _Actor:
    """Per-frame state of one figure (arrays over the T frames of a video)."""

    h: float
    x: np.ndarray  # ground point under the hips, world pixels
    y: np.ndarray
    yaw: np.ndarray  # 0: faces right, pi/2: faces the camera, pi: faces left
    tilt: np.ndarray
    lift: np.ndarray  # jump height in pixels
    lean: np.ndarray
    legs: np.ndarray  # (T, 4)
    arms: np.ndarray  # (T, 4)
    labels: np.ndarray  # (T, C) bool
    colors: tuple[tuple[int, ...], ...]  # shirt, trousers, skin, hair
    static: bool = True
    sitting: bool = False
    used_arms: set[int] = field(default_factory=set)
    speaking: np.ndarray | None = None
    pointing: np.ndarray | None = None  # (T,) arm index that points, -1 for none
    prop: tuple[int, float, float, tuple[int, ...]] | None = None  # arm, width, height, colour
    target: _Actor | None = None  # whom a scheduled pointer aims at
    point_bouts: list[tuple[float, float]] = field(default_factory=list)
    keypoints: np.ndarray | None = None  # (T, 15, 3) world x, y and depth towards the camera
    boxes: np.ndarray | None = None  # (T, 4) world x1, y1, x2, y2

    @property
    def thickness(self) -> int:
        return max(1, round(0.045 * self.h))

    def pose(self) -> None:
        """Compute world keypoints and tight boxes from the joint angles."""
        body = _skeleton(self.h, self.legs, self.arms, self.lean, self.tilt)
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        u, v, w = body[..., 0], body[..., 1], body[..., 2]
        self.keypoints = np.stack(
            [self.x[:, None] + u * c - w * s, self.y[:, None] - v - self.lift[:, None], u * s + w * c], -1
        )
        xy = self.keypoints[..., :2]
        radius = self.thickness / 2 + 0.5  # line half-width plus the anti-aliasing fringe
        head_r = _HEAD_R * self.h + 0.5
        lo = np.minimum(xy.min(axis=1) - radius, xy[:, HEAD] - head_r)
        hi = np.maximum(xy.max(axis=1) + radius, xy[:, HEAD] + head_r)
        self.boxes = np.concatenate([lo, hi], -1)


def _blend_arm(
    actor: _Actor, arm: int, weight: np.ndarray, shoulder: np.ndarray | float, elbow: np.ndarray | float
) -> None:
    actor.arms[:, 2 * arm] = (1 - weight) * actor.arms[:, 2 * arm] + weight * shoulder
    actor.arms[:, 2 * arm + 1] = (1 - weight) * actor.arms[:, 2 * arm + 1] + weight * elbow
    actor.used_arms.add(arm)


# ----------------------------------------------------------------------------------------------
# Scene planning
# ----------------------------------------------------------------------------------------------


class _Planner:
    """Samples the actors of one video and their behaviour schedules."""

    def __init__(self, rng: np.random.Generator, cfg: SynthConfig) -> None:
        self.rng, self.cfg = rng, cfg
        self.height, self.width = cfg.size
        self.t = np.arange(cfg.num_frames) / cfg.fps
        self.keytimes = [float(s) for s in cfg.keyframe_seconds()]
        self.actors: list[_Actor] = []

    # -- placement -----------------------------------------------------------------------------
    def ground(self) -> tuple[float, float]:
        """A ground line y and the matching standing height (nearer is bigger)."""
        frac = self.rng.uniform(0.0, 1.0)
        y = self.height * (0.62 + 0.33 * frac)
        far, near = self.cfg.actor_height
        return y, self.height * (far + (near - far) * frac) * self.rng.uniform(0.92, 1.08)

    def free_x(self, h: float, span: float = 0.0) -> float:
        """Left-most x of a group `span` wide, as far as possible from the actors already placed."""
        lo, hi = 0.08 * self.width + 0.3 * h, 0.92 * self.width - 0.3 * h - span
        if hi <= lo:
            return (self.width - span) / 2
        candidates = self.rng.uniform(lo, hi, 8)
        if not self.actors:
            return float(candidates[0])
        placed = np.array([a.x[0] for a in self.actors])
        gap = np.abs(candidates[:, None] - placed[None]).min(1) + np.abs(
            candidates[:, None] + span - placed[None]
        ).min(1)
        return float(candidates[np.argmax(gap)])

    def anchor(self) -> float:
        return float(self.rng.choice(self.keytimes))

    # -- actors --------------------------------------------------------------------------------
    def actor(
        self,
        x: float,
        y: float,
        h: float,
        posture: str = "stand",
        yaw: float | None = None,
        styled: bool = True,
    ) -> _Actor:
        """A static actor frozen at a random gait phase; the distribution every other actor shares.

        With `styled`, one arm may be held raised (a frozen wave) or straight (a pointing gesture).
        """
        rng, num = self.rng, len(self.t)
        if yaw is None:
            side = rng.integers(2) * math.pi + rng.normal(0, 0.2)
            yaw = side if posture != "stand" or rng.uniform() < 0.65 else rng.uniform(0, 2 * math.pi)
        amp = rng.uniform(0.12, 0.5)
        legs, arms = _gait(
            np.full(num, rng.uniform(0, 2 * math.pi)),
            amp,
            amp * rng.uniform(0.6, 1.1),
            rng.uniform(0.15, 0.55),
        )
        hsv = np.array([[[rng.integers(180), rng.integers(120, 230), rng.integers(140, 250)]]], np.uint8)
        shirt = tuple(int(c) for c in _hsv_to_bgr(hsv))
        trousers = tuple(int(c) for c in rng.integers(20, 140, 3))
        colors = (
            shirt,
            trousers,
            _SKIN[rng.integers(len(_SKIN))],
            tuple(int(c) for c in rng.integers(10, 60, 3)),
        )
        labels = np.zeros((num, len(SYNTH_CLASSES)), bool)
        a = _Actor(
            h,
            np.full(num, x),
            np.full(num, y),
            np.full(num, float(yaw)),
            np.zeros(num),
            np.zeros(num),
            np.full(num, rng.uniform(-0.08, 0.15)),
            legs,
            arms,
            labels,
            colors,
        )
        if posture == "sit":
            a.sitting = True
            a.legs[:] = [math.pi / 2 + rng.uniform(-0.1, 0.15), math.pi / 2 + rng.uniform(-0.15, 0.15)] * 2
            a.lean[:] = rng.uniform(-0.1, 0.1)
        elif posture == "lie":
            a.tilt[:] = rng.choice([-1, 1]) * (math.pi / 2 + rng.normal(0, 0.05))
        if posture != "lie" and styled:
            style = rng.uniform()
            if style < 0.12:  # an arm raised like a frozen wave
                _blend_arm(
                    a,
                    int(rng.integers(2)),
                    np.ones(num),
                    rng.uniform(2.5, 2.85),
                    self.wave_elbow(rng.uniform(0, 6.3)),
                )
            elif style < 0.24:  # a straight arm: labelled "point to" only where its ray hits someone
                arm = int(rng.integers(2))
                _blend_arm(a, arm, np.ones(num), rng.uniform(0.8, 2.0), 0.0)
                a.pointing = np.full(num, arm)
        self.actors.append(a)
        return a

    def wave_elbow(self, phase: np.ndarray | float) -> np.ndarray | float:
        return 0.55 + 0.45 * np.sin(phase)

    def single(self, posture: str | None = None) -> _Actor:
        if posture is None:
            posture = str(self.rng.choice(["stand", "sit", "lie"], p=[0.55, 0.25, 0.2]))
        y, h = self.ground()
        return self.actor(self.free_x(h), y, h, posture)

    def locomote(self, kind: str) -> _Actor:
        """A walker or runner pacing inside a region, stopping to turn around at its borders."""
        rng, t = self.rng, self.t
        a = self.single("stand")
        a.static = False
        yaw = (
            rng.integers(2) * math.pi + rng.normal(0, 0.25)
            if rng.uniform() < 0.85
            else rng.uniform(0, 2 * math.pi)
        )
        speed = a.h * (rng.uniform(0.35, 0.55) if kind == "walk" else rng.uniform(0.9, 1.3))
        freq = rng.uniform(0.8, 1.1) if kind == "walk" else rng.uniform(1.6, 2.2)
        x_lo, x_hi = 0.08 * self.width + 0.25 * a.h, 0.92 * self.width - 0.25 * a.h
        y_lo, y_hi = a.y[0] - 0.05 * self.height, min(a.y[0] + 0.05 * self.height, 0.97 * self.height)
        x, y, dt = a.x[0], a.y[0], 1 / self.cfg.fps
        moving, turning = np.zeros(len(t), bool), np.zeros(len(t), bool)
        turn_left, turn_from, turn_len, turn_sign = 0.0, 0.0, 1.0, 1.0
        for i in range(len(t)):
            if turn_left > 0:
                turn_left -= dt
                yaw = turn_from + turn_sign * math.pi * float(_smoothstep(np.array(1 - turn_left / turn_len)))
                turning[i] = True
            else:
                nx, ny = x + speed * dt * math.cos(yaw), y + 0.3 * speed * dt * math.sin(yaw)
                if x_lo <= nx <= x_hi and y_lo <= ny <= y_hi:
                    x, y, moving[i] = nx, ny, True
                else:
                    turn_len = turn_left = rng.uniform(0.5, 0.8)
                    turn_from, turn_sign, turning[i] = yaw, rng.choice([-1.0, 1.0]), True
            a.x[i], a.y[i], a.yaw[i] = x, y, yaw
        phase = rng.uniform(0, 2 * math.pi) + 2 * math.pi * freq * np.cumsum(moving) / self.cfg.fps
        amp = rng.uniform(0.12, 0.5)
        a.legs, gait_arms = _gait(phase, amp, amp * rng.uniform(0.6, 1.1), rng.uniform(0.15, 0.55))
        for arm in (0, 1):  # keep static arm styles (raised / pointing) sampled by `actor`
            if arm not in a.used_arms:
                a.arms[:, 2 * arm : 2 * arm + 2] = gait_arms[:, 2 * arm : 2 * arm + 2]
        a.labels[:, WALK if kind == "walk" else RUN] = moving
        a.labels[:, TURN] = self.widen(turning, 0.15)
        return a

    def widen(self, mask: np.ndarray, seconds: float) -> np.ndarray:
        """Dilate a per-frame mask in time (motion labels describe a short segment, as in AVA)."""
        k = round(seconds * self.cfg.fps)
        padded = np.pad(mask, k)
        return np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1).any(-1)

    def schedule(
        self, anchor: float, length: tuple[float, float], gap: tuple[float, float]
    ) -> list[tuple[float, float]]:
        """Bouts covering time `anchor`, plus more of them before and after, separated by gaps."""
        rng, end = self.rng, self.cfg.seconds
        first = anchor - rng.uniform(0.15, 0.85) * length[0]
        bouts = [(first, first + rng.uniform(*length))]
        while (start := bouts[-1][1] + rng.uniform(*gap)) < end:
            bouts.append((start, start + rng.uniform(*length)))
        while (stop := bouts[0][0] - rng.uniform(*gap)) > 0:
            bouts.insert(0, (stop - rng.uniform(*length), stop))
        return bouts

    def jump(self, a: _Actor, anchor: float) -> None:
        t, rng = self.t, self.rng
        for start, end in self.schedule(anchor, (1.2, 2.5), (1.0, 3.0)):
            freq, height = rng.uniform(1.4, 2.0), rng.uniform(0.12, 0.25) * a.h
            hops = max(1, round((end - start) * freq))  # land at the end of the bout
            inside = (t >= start) & (t <= start + hops / freq)
            a.lift += inside * height * np.abs(np.sin(math.pi * freq * (t - start)))
            a.labels[:, JUMP] |= inside

    def wave(self, a: _Actor, anchor: float) -> None:
        t, rng = self.t, self.rng
        arm = next(i for i in (int(rng.integers(2)), 0, 1) if i not in a.used_arms)
        for start, end in self.schedule(anchor, (1.5, 3.5), (1.0, 3.0)):
            freq = rng.uniform(1.5, 2.5)
            _blend_arm(
                a,
                arm,
                _bout(t, start, end, 0.25),
                rng.uniform(2.5, 2.85),
                self.wave_elbow(2 * math.pi * freq * t),
            )
            a.labels[:, WAVE] |= (t >= start) & (t <= end)

    def turn(self, a: _Actor, anchor: float) -> None:
        t, rng = self.t, self.rng
        for start, end in self.schedule(anchor, (0.5, 0.8), (1.2, 3.0)):
            a.yaw += rng.choice([-1, 1]) * math.pi * _smoothstep((t - start) / (end - start))
            a.labels[:, TURN] |= (t >= start - 0.15) & (t <= end + 0.15)

    def fall(self, a: _Actor, anchor: float) -> None:
        """Fall (accelerating), lie a while, get up (unlabelled: a fall played backwards), repeat."""
        t, rng = self.t, self.rng
        a.yaw[:] = rng.integers(2) * math.pi + rng.normal(0, 0.2)
        direction = rng.choice([-1, 1]) * math.pi / 2

        def durations() -> list[float]:  # falling, lying, getting up, standing again
            return [
                rng.uniform(0.5, 0.8),
                rng.uniform(1.3, 2.2),
                rng.uniform(0.7, 1.0),
                rng.uniform(1.0, 2.0),
            ]

        falls = [(anchor - rng.uniform(0.05, 0.35), durations())]
        while (start := falls[0][0] - sum((d := durations())[:4])) > 0.3:
            falls.insert(0, (start, d))
        while (start := falls[-1][0] + sum(falls[-1][1])) < self.cfg.seconds:
            falls.append((start, durations()))
        for start, (down, lying, rise, _) in falls:
            up = start + down + lying
            falling = np.clip((t - start) / down, 0, 1) ** 2
            a.tilt += direction * np.where(t < up, falling, 1 - _smoothstep((t - up) / rise))
            a.labels[:, FALL] |= (t >= start - 0.2) & (t <= start + down + 0.6)

    def speak(self, a: _Actor, anchor: float | None = None) -> None:
        anchor = self.rng.uniform(0, self.cfg.seconds) if anchor is None else anchor
        bouts = self.schedule(anchor, (1.2, 2.5), (0.3, 2.0))
        a.speaking = np.zeros(len(self.t), bool)
        for start, end in bouts:
            a.speaking |= (self.t >= start) & (self.t <= end)

    def talk_pair(self) -> None:
        rng = self.rng
        y, h = self.ground()
        gap = rng.uniform(0.55, 1.0) * h
        x = self.free_x(h, gap)
        postures = [("stand", "stand"), ("sit", "sit"), ("stand", "sit")][rng.choice(3, p=[0.6, 0.25, 0.15])]
        left = self.actor(x, y, h, postures[0], yaw=rng.normal(0, 0.25))
        right = self.actor(
            x + gap,
            y + rng.normal(0, 0.01 * self.height),
            h * rng.uniform(0.95, 1.05),
            postures[1],
            yaw=math.pi + rng.normal(0, 0.25),
        )
        anchor = self.anchor()
        speakers = self.schedule(anchor, (1.0, 2.5), (0.2, 0.6))
        first = int(rng.integers(2))
        for who in (left, right):
            who.speaking = np.zeros(len(self.t), bool)
        for k, (start, end) in enumerate(speakers):
            who = (left, right)[(k + first) % 2]
            who.speaking |= (self.t >= start) & (self.t <= end)

    def handshake_pair(self) -> None:
        """Two mirror-image actors whose right hands meet at the midpoint and shake up and down."""
        rng, t = self.rng, self.t
        y, h = self.ground()
        reach, drop = rng.uniform(0.2, 0.23), rng.uniform(0.12, 0.17)
        x = self.free_x(h, 2 * reach * h)
        left = self.actor(x, y, h, yaw=0.0, styled=False)
        right = self.actor(x + 2 * reach * h, y, h, yaw=math.pi, styled=False)
        left.lean[:] = 0.0
        for name in ("legs", "arms", "lean"):
            setattr(right, name, getattr(left, name).copy())
        phase = rng.uniform(0, 2 * math.pi)
        shoulder, elbow = _reach(reach, -drop - 0.03 * np.sin(2 * math.pi * 2.5 * t + phase))
        for start, end in self.schedule(self.anchor(), (1.5, 3.0), (1.5, 3.0)):
            weight = _bout(t, start - 0.35, end + 0.35, 0.35)
            for who in (left, right):
                _blend_arm(who, 0, weight, shoulder, elbow)
                who.labels[:, SHAKE] |= (t >= start) & (t <= end)

    def pointer(self) -> None:
        """An actor pointing at a static target placed beside it (the arm is aimed in `aim`)."""
        rng, t = self.rng, self.t
        y, h = self.ground()
        distance = rng.uniform(0.8, 2.2) * h
        x = self.free_x(h, distance)
        flip = rng.uniform() < 0.5
        target_y = min(y + rng.normal(0, 0.04 * self.height), 0.97 * self.height)
        posture = ["stand", "sit", "lie"][rng.choice(3, p=[0.6, 0.25, 0.15])]
        target = self.actor(x if flip else x + distance, target_y, h * rng.uniform(0.9, 1.1), posture)
        who = self.actor(
            x + distance if flip else x,
            y,
            h,
            ["stand", "sit"][rng.choice(2, p=[0.7, 0.3])],
            yaw=math.pi if flip else 0.0,
            styled=False,
        )
        who.target = target
        who.point_bouts = self.schedule(self.anchor(), (1.5, 3.0), (1.0, 2.5))
        who.pointing = np.full(len(t), -1)

    def aim(self, who: _Actor) -> None:
        """Aim the pointing arm at the target's chest (needs both actors' keypoints)."""
        t = self.t
        arm = 1 if who.yaw[0] > 1 else 0  # the arm nearer the camera
        chest = (who.target.keypoints[:, HIP, :2] + who.target.keypoints[:, NECK, :2]) / 2
        delta = chest - who.keypoints[:, _LIMBS[2 + arm][0], :2]
        # The pointer faces the target, so the arm's angle from straight down is measured towards it.
        angle = np.clip(np.arctan2(np.abs(delta[:, 0]), delta[:, 1]), 0.5, 2.6) - who.lean
        for start, end in who.point_bouts:
            _blend_arm(who, arm, _bout(t, start - 0.3, end + 0.3, 0.3), angle, 0.0)
            who.pointing[(t >= start) & (t <= end)] = arm

    def carry(self) -> None:
        """At least one actor holds a coloured box in a free hand; others do so at random."""
        rng = self.rng
        order = rng.permutation(len(self.actors))
        for rank, k in enumerate(order):
            a = self.actors[k]
            free = [arm for arm in (0, 1) if arm not in a.used_arms]
            if free and (rank == 0 or rng.uniform() < 0.25):
                arm = free[int(rng.integers(len(free)))]
                a.prop = (
                    arm,
                    rng.uniform(0.09, 0.15) * a.h,
                    rng.uniform(0.12, 0.2) * a.h,
                    _PROP_PALETTE[rng.integers(len(_PROP_PALETTE))],
                )
                a.used_arms.add(arm)
                a.labels[:, CARRY] = True


def _reach(forward: float, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-link inverse kinematics: shoulder and elbow angles putting the hand at (forward, up) x h
    from the shoulder."""
    upper, fore = _UPPER, _FORE
    dist2 = forward**2 + up**2
    elbow = np.arccos(np.clip((dist2 - upper**2 - fore**2) / (2 * upper * fore), -1, 1))
    toward = np.arctan2(forward, -up)
    return toward - np.arctan2(fore * np.sin(elbow), upper + fore * np.cos(elbow)), elbow


def _hsv_to_bgr(hsv: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]


def _plan_actors(rng: np.random.Generator, cfg: SynthConfig, index: int) -> list[_Actor]:
    plan = _Planner(rng, cfg)
    [plan.talk_pair, plan.handshake_pair, plan.pointer][index % 3]()
    for motion in ((WALK, WAVE), (RUN, FALL), (JUMP, TURN))[index % 3]:
        if motion in (WALK, RUN):
            plan.locomote("walk" if motion == WALK else "run")
            continue
        a = plan.single("sit" if motion == WAVE and rng.uniform() < 0.3 else "stand")
        {WAVE: plan.wave, FALL: plan.fall, JUMP: plan.jump, TURN: plan.turn}[motion](a, plan.anchor())
    room = cfg.max_actors - len(plan.actors)
    if room > 0 and not any(a.sitting for a in plan.actors):
        plan.single("sit")
    room = cfg.max_actors - len(plan.actors)
    if room > 0 and not any(np.abs(a.tilt).max() > 1 for a in plan.actors) and rng.uniform() < 0.5:
        plan.single("lie")
    extra = rng.integers(cfg.extra_actors[0], cfg.extra_actors[1] + 1)
    for _ in range(min(extra, cfg.max_actors - len(plan.actors))):
        _random_single(plan)
    decoy = [a for a in plan.actors if a.speaking is None and a.static and abs(a.tilt[0]) < 0.1]
    if decoy and rng.uniform() < 0.5:  # a lone speaker: speech marks without a listener
        plan.speak(decoy[int(rng.integers(len(decoy)))])
    plan.carry()
    for a in plan.actors:
        a.pose()
    for a in plan.actors:
        if a.target is not None:
            plan.aim(a)
            a.pose()
    _context_labels(plan.actors)
    for a in plan.actors:
        lying = np.abs(a.tilt) > math.pi / 4
        a.labels[:, LIE] = lying
        a.labels[:, SIT] = a.sitting & ~lying
        a.labels[:, STAND] = ~a.sitting & ~lying
    return plan.actors


def _random_single(plan: _Planner) -> None:
    rng = plan.rng
    posture = str(rng.choice(["stand", "sit", "lie"], p=[0.55, 0.25, 0.2]))
    if posture == "stand" and rng.uniform() < 0.5:
        a = plan.locomote("walk" if rng.uniform() < 0.6 else "run")
        if rng.uniform() < 0.25 and len(a.used_arms) < 2:
            plan.wave(a, plan.anchor())
        return
    a = plan.single(posture)
    if posture == "stand":
        for chance, action in ((0.15, plan.jump), (0.15, plan.turn), (0.15, plan.wave)):
            if rng.uniform() < chance and (action != plan.wave or len(a.used_arms) < 2):
                action(a, plan.anchor())
    elif posture == "sit" and rng.uniform() < 0.15 and len(a.used_arms) < 2:
        plan.wave(a, plan.anchor())


def _context_labels(actors: list[_Actor]) -> None:
    """Talk to and point to: decided by the other actors (ray hits, a listener facing back)."""
    for a in actors:
        others = [o for o in actors if o is not a]
        if a.speaking is not None:
            facing = np.cos(a.yaw)
            side = np.sign(facing) * (np.abs(facing) > 0.5)
            heard = np.zeros_like(a.speaking)
            for o in others:
                dx = (o.x - a.x) * side
                heard |= (
                    (dx > 0.15 * a.h)
                    & (dx < 1.7 * a.h)
                    & (np.abs(o.y - a.y) < 0.35 * a.h)
                    & (np.cos(o.yaw) * side < -0.5)
                    & (np.abs(o.tilt) < math.pi / 4)
                )
            a.labels[:, TALK] = a.speaking & heard
        if a.pointing is not None and others:
            idx = np.arange(len(a.x))
            arm = np.maximum(a.pointing, 0)
            hand = a.keypoints[idx, np.where(arm == 0, HAND_R, HAND_L), :2]
            shoulder = a.keypoints[idx, np.where(arm == 0, SH_R, SH_L), :2]
            ray = hand - shoulder
            ray /= np.linalg.norm(ray, axis=-1, keepdims=True) + 1e-9
            hit = np.zeros(len(idx), bool)
            for o in others:
                hit |= _ray_hits(hand, ray, o.boxes, 4 * a.h)
            a.labels[:, POINT] = (a.pointing >= 0) & hit


def _ray_hits(origin: np.ndarray, direction: np.ndarray, boxes: np.ndarray, reach: float) -> np.ndarray:
    """Slab test: does origin + s * direction, 0 <= s <= reach, cross each box? Shapes (T, 2), (T, 4)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (boxes[:, :2] - origin) / direction
        t2 = (boxes[:, 2:] - origin) / direction
    near = np.nanmax(np.minimum(t1, t2), axis=1)
    far = np.nanmin(np.maximum(t1, t2), axis=1)
    return (near <= far) & (far >= 0) & (near <= reach)


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


def render_frames(video: SynthVideo, *, figures: bool = True, extras: bool = True) -> Iterator[np.ndarray]:
    """Yield the (H, W, 3) uint8 BGR frames of `video`.

    Args:
        video: from `simulate_video`.
        figures: draw the actors' bodies (off: background, distractors and extras only; tests use
            the difference to find the figures' pixels).
        extras: draw what belongs to actors but not to their boxes: carried boxes, seats, speech marks.
    """
    height, width = video.size
    margin = (video.background.shape[0] - height) // 2
    sprites = [_Sprite(a, video.camera) for a in video.actors]
    depth_order = np.argsort(np.stack([a.y for a in video.actors], 1), axis=1, kind="stable")
    shapes = [(s, _shape_geometry(s, video.camera)) for s in video.behind + video.front]
    for i in range(len(video.camera)):
        ox, oy = video.camera[i]
        img = video.background[margin + oy : margin + oy + height, margin + ox : margin + ox + width].copy()
        for shape, geometry in shapes[: len(video.behind)]:
            _draw_shape(img, shape, geometry[i])
        for k in depth_order[i]:
            sprites[k].draw(img, i, figures, extras)
        for shape, geometry in shapes[len(video.behind) :]:
            _draw_shape(img, shape, geometry[i])
        yield np.clip(img + video.noise[video.noise_index[i]], 0, 255).astype(np.uint8)


_SHIFT, _ONE = 4, 16  # OpenCV sub-pixel bits and the fixed-point value of one pixel


def _fixed(p: np.ndarray) -> np.ndarray:
    """Continuous coordinates (0 = pixel edge) to OpenCV fixed point (0 = pixel centre)."""
    return np.round((p - 0.5) * _ONE).astype(np.int64)


def _shape_geometry(shape: _Shape, camera: np.ndarray) -> list:
    center = shape.center - camera
    if shape.kind == "blob":
        return list(zip(_fixed(center).tolist(), shape.angle.tolist(), strict=True))
    corners = [
        cv2.boxPoints(((x - 0.5, y - 0.5), shape.size, a))
        for (x, y), a in zip(center, shape.angle, strict=True)
    ]
    return list(np.round(np.stack(corners) * _ONE).astype(np.int32))


def _draw_shape(img: np.ndarray, shape: _Shape, geometry: list | np.ndarray) -> None:
    if shape.kind == "blob":
        center, angle = geometry
        axes = (int(shape.size[0] * _ONE), int(shape.size[1] * _ONE))
        cv2.ellipse(img, center, axes, angle, 0, 360, shape.color, -1, cv2.LINE_AA, _SHIFT)
    else:
        cv2.fillConvexPoly(img, geometry, shape.color, cv2.LINE_AA, _SHIFT)


class _Sprite:
    """An actor's drawing instructions, precomputed for all frames (so drawing is only OpenCV calls)."""

    def __init__(self, a: _Actor, camera: np.ndarray) -> None:
        kp = a.keypoints.copy()
        kp[..., :2] -= camera[:, None]
        r = _HEAD_R * a.h
        self.a, self.thickness, self.radius = a, a.thickness, int(r * _ONE)
        self.points = _fixed(kp[..., :2]).tolist()
        depth = np.stack([kp[:, list(limb), 2].mean(1) for limb in _LIMBS], 1)  # (T, 4)
        self.far = (depth < 0).tolist()
        self.order = np.argsort(depth, axis=1, kind="stable").tolist()
        shirt, trousers = a.colors[:2]
        dark = [tuple(int(c * 0.7) for c in color) for color in (trousers, trousers, shirt, shirt)]
        self.colors = ([trousers, trousers, shirt, shirt], dark)
        # Head: the split between face and hair runs along the neck-to-head axis.
        up = kp[:, HEAD, :2] - kp[:, NECK, :2]
        up /= np.linalg.norm(up, axis=1, keepdims=True) + 1e-9
        across = np.stack([-up[:, 1], up[:, 0]], 1)  # forward on screen when facing right
        self.head_angle = np.degrees(np.arctan2(up[:, 1], up[:, 0])).tolist()
        c, s = np.cos(a.yaw), np.sin(a.yaw)
        self.cos, self.sin = c.tolist(), s.tolist()
        self.rim = np.maximum(0, (r * np.abs(s) * _ONE).astype(int)).tolist()
        eyes = []
        for lateral in (0.35, -0.35):
            along, eye_depth = 0.6 * c - lateral * s, 0.6 * s + lateral * c
            xy = kp[:, HEAD, :2] + r * (along[:, None] * across + 0.15 * up)
            eyes.append((_fixed(xy).tolist(), ((eye_depth > 0.1) & (s > 0.2)).tolist()))
        self.eyes, self.eye_radius = eyes, max(_ONE // 2, int(0.18 * r * _ONE))
        side = np.where(c >= 0, 1.0, -1.0)[:, None]
        self.speech_angle = np.degrees(
            np.arctan2(side[:, 0] * across[:, 1], side[:, 0] * across[:, 0])
        ).tolist()
        if a.prop is not None:
            arm, pw, ph, _ = a.prop
            hand = kp[:, _LIMBS[2 + arm][2], :2]
            self.prop = (
                _fixed(hand - np.array([pw / 2, 0])).tolist(),
                _fixed(hand + np.array([pw / 2, ph])).tolist(),
            )
        if a.sitting:  # a stool under the hips, down to the feet
            top_left = kp[:, HIP, :2] + [-0.15 * a.h, a.thickness / 2]
            bottom = kp[:, [FOOT_R, FOOT_L], 1].max(1)
            bottom_right = np.stack([top_left[:, 0] + 0.3 * a.h, bottom], 1)
            self.seat = (_fixed(top_left).tolist(), _fixed(bottom_right).tolist())

    def draw(self, img: np.ndarray, i: int, figures: bool, extras: bool) -> None:
        a, t, p = self.a, self.thickness, self.points[i]
        shirt, trousers = a.colors[:2]
        if extras and a.sitting:
            color = tuple(c // 2 for c in trousers)
            cv2.rectangle(img, self.seat[0][i], self.seat[1][i], color, -1, cv2.LINE_AA, _SHIFT)
        far = self.far[i]
        for k in self.order[i]:
            if far[k]:
                self._limb(img, i, k, figures, extras)
        if figures:
            cv2.line(img, p[HIP_L], p[HIP_R], trousers, t, cv2.LINE_AA, _SHIFT)
            cv2.line(img, p[HIP], p[NECK], shirt, max(1, round(1.6 * t)), cv2.LINE_AA, _SHIFT)
            cv2.line(img, p[SH_L], p[SH_R], shirt, t, cv2.LINE_AA, _SHIFT)
            self._head(img, i)
        for k in self.order[i]:
            if not far[k]:
                self._limb(img, i, k, figures, extras)
        if extras and a.speaking is not None and a.speaking[i]:
            for scale in (1.7, 2.4):
                axes = (int(scale * self.radius), int(scale * self.radius))
                angle = self.speech_angle[i]
                cv2.ellipse(img, p[HEAD], axes, angle, -35, 35, (245, 245, 245), 1, cv2.LINE_AA, _SHIFT)

    def _limb(self, img: np.ndarray, i: int, k: int, figures: bool, extras: bool) -> None:
        p = self.points[i]
        if figures:
            color = self.colors[self.far[i][k]][k]
            j0, j1, j2 = _LIMBS[k]
            cv2.line(img, p[j0], p[j1], color, self.thickness, cv2.LINE_AA, _SHIFT)
            cv2.line(img, p[j1], p[j2], color, self.thickness, cv2.LINE_AA, _SHIFT)
        if extras and self.a.prop is not None and self.a.prop[0] == k - 2:
            cv2.rectangle(img, self.prop[0][i], self.prop[1][i], self.a.prop[3], -1, cv2.LINE_AA, _SHIFT)

    def _head(self, img: np.ndarray, i: int) -> None:
        """Hair disc, face half towards the facing side, widened (towards the camera) or narrowed."""
        _, _, skin, hair = self.a.colors
        center, angle, full = self.points[i][HEAD], self.head_angle[i], (self.radius, self.radius)
        cv2.circle(img, center, self.radius, hair, -1, cv2.LINE_AA, _SHIFT)
        # In the frame rotated by `angle`, arc angles 0..180 lie on the side an actor facing right faces.
        front, back = ((0, 180), (180, 360)) if self.cos[i] >= 0 else ((180, 360), (0, 180))
        cv2.ellipse(img, center, full, angle, *front, skin, -1, cv2.LINE_AA, _SHIFT)
        if self.rim[i] > 0:
            towards = self.sin[i] > 0
            rim = (self.radius, self.rim[i])
            arc, color = (back, skin) if towards else (front, hair)
            cv2.ellipse(img, center, rim, angle, *arc, color, -1, cv2.LINE_AA, _SHIFT)
        for points, visible in self.eyes:
            if visible[i]:
                cv2.circle(img, points[i], self.eye_radius, (20, 20, 20), -1, cv2.LINE_AA, _SHIFT)


# ----------------------------------------------------------------------------------------------
# Writing the dataset
# ----------------------------------------------------------------------------------------------

# Frame file layouts, numbered from 1; the AVA one is the primary copy, the others hard links.
LAYOUTS: dict[str, str] = {
    "ava": "frames/{video}/{video}_{frame:06d}.jpg",
    "mmaction2": "rawframes/{video}/img_{frame:05d}.jpg",
    "ucf24": "rgb-images/{video}/{frame:05d}.jpg",
}
ANNOTATIONS: dict[str, str] = {
    "train_csv": "annotations/train.csv",
    "val_csv": "annotations/val.csv",
    "labelmap": "annotations/labelmap.pbtxt",
    "train_exclusions": "annotations/train_excluded_timestamps.csv",
    "val_exclusions": "annotations/val_excluded_timestamps.csv",
    "ucf_gt": "annotations/synth-GT.pkl",
}


def generate(
    out_dir: str | os.PathLike,
    num_videos: int = 16,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    *,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthSummary:
    """Generate the synthetic benchmark into `out_dir` (byte-identical for the same arguments).

    Args:
        out_dir: output directory; must not exist, be empty, or (with `overwrite`) hold an earlier
            synthetic dataset.
        num_videos: number of videos (at least 2; the last `config.val_fraction` are validation).
        seed: random seed; video i depends only on (seed, i).
        size: frame height and width, overriding `config.size`.
        config: world and output settings.
        overwrite: replace an existing synthetic dataset in `out_dir`.
        progress: show a progress bar over videos.

    Returns:
        Counts of what was written.

    Raises:
        UserError: bad arguments, or an output directory that may not be written.
    """
    started = time.perf_counter()
    cfg = config or SynthConfig()
    if size is not None:
        cfg = replace(cfg, size=(int(size[0]), int(size[1])))
    _validate(cfg, num_videos)
    out = Path(out_dir)
    _check_output(out, overwrite)
    make_dirs(out.parent)
    # Build next to the target and rename at the end: an interrupted run leaves only a hidden
    # `.NAME.partial-*` folder, never something that looks like a finished dataset.
    partial = out.parent / f".{out.name}.partial-{os.getpid()}-{time.time_ns()}"
    partial.mkdir()
    try:
        summary = _write_dataset(partial, cfg, num_videos, seed, progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    summary.out_dir = out
    summary.seconds_taken = time.perf_counter() - started
    return summary


def _validate(cfg: SynthConfig, num_videos: int) -> None:
    height, width = cfg.size
    if num_videos < 2:
        raise UserError(
            f"--videos must be at least 2 (one to train on, one to validate on), got {num_videos}"
        )
    if min(height, width) < 64:
        raise UserError(f"--size must be at least 64 x 64 pixels, got {height} x {width}")
    if cfg.fps < 1 or not cfg.keyframe_seconds():
        window = cfg.clip_frames * cfg.clip_stride
        raise UserError(
            f"videos of {cfg.seconds} s at {cfg.fps} fps are too short for one {window}-frame clip window"
        )
    if not 1 <= cfg.jpeg_quality <= 100:
        raise UserError(f"jpeg_quality must be in 1..100, got {cfg.jpeg_quality}")
    far, near = cfg.actor_height
    if not 0 < far <= near <= 1:
        raise UserError(f"--actor-height must satisfy 0 < FAR <= NEAR <= 1, got {far} {near}")
    if cfg.max_actors < 4:
        raise UserError(f"--max-actors must be at least 4 (the scheduled actors), got {cfg.max_actors}")
    low, high = cfg.background_shapes
    if not 0 <= low < high:
        raise UserError(f"--background-shapes must satisfy 0 <= MIN < MAX, got {low} {high}")


def _check_output(out: Path, overwrite: bool) -> None:
    entries = folder_entries(out)
    if not entries:
        return
    if not overwrite:
        raise UserError(f"{out}: the folder is not empty; choose another or pass --overwrite")
    if not (out / "synth.json").is_file():
        raise UserError(f"{out}: the folder is not empty and holds no synth.json; refusing to replace it")


def _write_dataset(root: Path, cfg: SynthConfig, num_videos: int, seed: int, progress: bool) -> SynthSummary:
    names = [f"synth_{i:04d}" for i in range(num_videos)]
    num_val = min(num_videos - 1, max(1, round(num_videos * cfg.val_fraction)))
    splits = {"train": names[: num_videos - num_val], "val": names[num_videos - num_val :]}
    rows: dict[str, list[str]] = {"train": [], "val": []}
    gttubes: dict[str, dict[int, list[np.ndarray]]] = {}
    link = _can_hard_link(root)
    # JPEG encoding and file writes release the GIL: they overlap with drawing the next frames.
    with ThreadPoolExecutor(max_workers=2) as writers:
        for index in tqdm(range(num_videos), desc="synth videos", unit="video", disable=not progress):
            video = simulate_video(cfg, seed, index)
            _write_frames(root, video, cfg.jpeg_quality, link, writers)
            rows["val" if video.name in splits["val"] else "train"].extend(_ava_rows(video, cfg))
            gttubes[video.name] = _tubes(video)
    (root / "annotations").mkdir()
    for split in ("train", "val"):
        (root / ANNOTATIONS[f"{split}_csv"]).write_text("".join(rows[split]))
        (root / ANNOTATIONS[f"{split}_exclusions"]).write_text("")
    (root / ANNOTATIONS["labelmap"]).write_text(
        "".join(f'item {{\n  name: "{c.name}"\n  id: {c.id}\n}}\n' for c in SYNTH_CLASSES)
    )
    ground_truth = {
        "labels": [c.name for c in SYNTH_CLASSES],
        "gttubes": gttubes,
        "nframes": dict.fromkeys(names, cfg.num_frames),
        "train_videos": [splits["train"]],
        "test_videos": [splits["val"]],
        "resolution": dict.fromkeys(names, tuple(cfg.size)),
    }
    (root / ANNOTATIONS["ucf_gt"]).write_bytes(pickle.dumps(ground_truth, protocol=4))

    all_rows = [row.split(",") for split in ("train", "val") for row in rows[split]]
    class_counts = {c.name: sum(int(r[6]) == c.id for r in all_rows) for c in SYNTH_CLASSES}
    summary = SynthSummary(
        out_dir=root,
        videos=num_videos,
        train_videos=len(splits["train"]),
        val_videos=len(splits["val"]),
        frames=num_videos * cfg.num_frames,
        keyframes=num_videos * len(cfg.keyframe_seconds()),
        boxes=len({tuple(r[:2] + r[7:]) for r in all_rows}),
        label_rows=len(all_rows),
        tubes=sum(len(tubes) for video in gttubes.values() for tubes in video.values()),
        class_counts=class_counts,
        seconds_taken=0.0,
    )
    meta = {
        "generator": "evad.data.synthetic",
        "seed": seed,
        "num_videos": num_videos,
        "config": asdict(cfg),
        "frames_per_video": cfg.num_frames,
        "keyframe_seconds": [s + cfg.timestamp_start for s in cfg.keyframe_seconds()],
        "frame_of_second": "frame file number = (second - timestamp_start) * fps + 1",
        "layouts": LAYOUTS,
        "annotations": ANNOTATIONS,
        "splits": splits,
        "classes": [asdict(c) for c in SYNTH_CLASSES],
        "counts": {k: v for k, v in asdict(summary).items() if k not in ("out_dir", "seconds_taken")},
    }
    (root / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return summary


def _can_hard_link(root: Path) -> bool:
    probe = root / ".link-probe"
    probe.write_bytes(b"")
    try:
        os.link(probe, root / ".link-probe-2")
    except OSError:
        return False
    else:
        (root / ".link-probe-2").unlink()
        return True
    finally:
        probe.unlink()


def _write_frames(
    root: Path, video: SynthVideo, quality: int, link: bool, writers: ThreadPoolExecutor
) -> None:
    """Write the AVA-layout JPEGs and hard-link (or copy) them into the other layouts."""
    for layout in LAYOUTS.values():
        (root / layout.format(video=video.name, frame=0)).parent.mkdir(parents=True)
    paths = [
        [root / layout.format(video=video.name, frame=n) for layout in LAYOUTS.values()]
        for n in range(1, len(video.camera) + 1)
    ]
    pending = [
        writers.submit(_save_frame, image, quality, frame_paths, link)
        for image, frame_paths in zip(render_frames(video), paths, strict=True)
    ]
    for job in pending:
        job.result()


def _save_frame(image: np.ndarray, quality: int, paths: list[Path], link: bool) -> None:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {paths[0]}")
    paths[0].write_bytes(data.tobytes())
    for path in paths[1:]:
        if link:
            os.link(paths[0], path)
        else:
            shutil.copyfile(paths[0], path)


def _visible(video: SynthVideo) -> np.ndarray:
    """(A, T) boxes at least one pixel wide and high inside the frame."""
    return ((video.boxes[..., 2] - video.boxes[..., 0]) >= 1) & (
        (video.boxes[..., 3] - video.boxes[..., 1]) >= 1
    )


def _ava_rows(video: SynthVideo, cfg: SynthConfig) -> list[str]:
    height, width = cfg.size
    visible = _visible(video)
    rows = []
    for second in cfg.keyframe_seconds():
        frame = second * cfg.fps
        for person in range(len(video.actors)):
            if not visible[person, frame]:
                continue
            x1, y1, x2, y2 = video.boxes[person, frame] / [width, height, width, height]
            for c in np.flatnonzero(video.labels[person, frame]):
                stamp = second + cfg.timestamp_start
                rows.append(f"{video.name},{stamp},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{c + 1},{person}\n")
    return rows


def _tubes(video: SynthVideo) -> dict[int, list[np.ndarray]]:
    """UCF-style tubes: one per actor and maximal run of frames holding a label."""
    visible = _visible(video)
    tubes: dict[int, list[np.ndarray]] = {}
    for c in range(len(SYNTH_CLASSES)):
        for person in range(len(video.actors)):
            mask = np.concatenate([[False], video.labels[person, :, c] & visible[person], [False]])
            edges = np.flatnonzero(np.diff(mask.astype(np.int8)))
            for start, stop in zip(edges[::2], edges[1::2], strict=True):
                frames = np.arange(start, stop)
                tube = np.concatenate([frames[:, None] + 1.0, np.round(video.boxes[person, frames], 2)], 1)
                tubes.setdefault(c, []).append(tube.astype(np.float32))
    return tubes
