"""Articulated figures: a small 3-D skeleton seen after a yaw rotation, and the actor state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
