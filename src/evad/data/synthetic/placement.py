"""Where the actors of a video stand and how they look: ground line, spacing, posture and style.

`_PlacementPlanner` is the base of the planner (`actions.py` adds single-actor actions over time,
`interactions.py` the two-actor scenes); `planner.py` says which of them a video gets.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from evad.data.synthetic.config import SYNTH_CLASSES, SynthConfig
from evad.data.synthetic.figures import _SKIN, _Actor, _blend_arm, _gait


class _PlacementPlanner:
    """Samples static actors of one video: where they stand, their posture, colours and arm style."""

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


def _hsv_to_bgr(hsv: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
