"""The interaction classes: the two-actor scenes that stage them and the labels decided by context.

A video gets one scene (talk pair, handshake or pointer, by its index mod 3): two actors on one ground
line, the pointer facing its target and the others facing each other. "Talk to" and "point to" are
labelled only where another actor answers the gesture (a listener facing back, a pointing ray that
hits someone's box, for any straight arm), which is the context the refinement decoder (SPEC
section 4) must look at.
"""

from __future__ import annotations

import math

import numpy as np

from evad.data.synthetic.actions import _ActionPlanner
from evad.data.synthetic.config import POINT, SHAKE, TALK
from evad.data.synthetic.figures import (
    _FORE,
    _LIMBS,
    _UPPER,
    HAND_L,
    HAND_R,
    HIP,
    NECK,
    SH_L,
    SH_R,
    _Actor,
    _blend_arm,
    _bout,
)


class _Planner(_ActionPlanner):
    """Samples the actors of one video and their behaviour schedules, two-actor scenes included."""

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


def _reach(forward: float, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-link inverse kinematics: shoulder and elbow angles putting the hand at (forward, up) x h
    from the shoulder."""
    upper, fore = _UPPER, _FORE
    dist2 = forward**2 + up**2
    elbow = np.arccos(np.clip((dist2 - upper**2 - fore**2) / (2 * upper * fore), -1, 1))
    toward = np.arctan2(forward, -up)
    return toward - np.arctan2(fore * np.sin(elbow), upper + fore * np.cos(elbow)), elbow


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
