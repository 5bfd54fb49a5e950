"""Single-actor actions over time: walking and running paths, jumps, waves, turns, falls, speech.

Walkers and runners pace a region and turn around at its borders; the other actions come in bouts
around an anchor time, with more bouts before and after it (`_ActionPlanner.schedule`). Each writes
its own per-frame label, except speech, which only sets the speech marks ("talk to" needs a listener,
see `interactions.py`); carrying a box is sampled here too.
"""

from __future__ import annotations

import math

import numpy as np

from evad.data.synthetic.config import CARRY, FALL, JUMP, RUN, TURN, WALK, WAVE
from evad.data.synthetic.figures import _PROP_PALETTE, _Actor, _blend_arm, _bout, _gait, _smoothstep
from evad.data.synthetic.placement import _PlacementPlanner


class _ActionPlanner(_PlacementPlanner):
    """Adds the actions one actor performs alone, and their labels, to the placed actors."""

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
