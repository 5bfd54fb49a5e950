"""Who does what when: the actors of a video, their scheduled actions and per-frame labels."""

from __future__ import annotations

import math

import cv2
import numpy as np

from evad.data.synthetic.config import (
    CARRY,
    FALL,
    JUMP,
    LIE,
    POINT,
    RUN,
    SHAKE,
    SIT,
    STAND,
    SYNTH_CLASSES,
    TALK,
    TURN,
    WALK,
    WAVE,
    SynthConfig,
)
from evad.data.synthetic.figures import (
    _FORE,
    _LIMBS,
    _PROP_PALETTE,
    _SKIN,
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
    _gait,
    _smoothstep,
)

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
