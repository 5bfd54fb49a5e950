"""Drawing a simulated video frame by frame (OpenCV)."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from evad.data.synthetic.figures import (
    _HEAD_R,
    _LIMBS,
    FOOT_L,
    FOOT_R,
    HEAD,
    HIP,
    HIP_L,
    HIP_R,
    NECK,
    SH_L,
    SH_R,
    _Actor,
)
from evad.data.synthetic.scene import SynthVideo, _Shape


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
