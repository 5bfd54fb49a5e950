"""Who does what when: the cast of one video, its scheduled actions and per-frame labels.

A video gets one interaction scene and one motion pair (both by its index mod 3), a sitter if none
sits yet, maybe a lying actor, random extra actors, maybe a lone speaker and carried boxes;
then the poses are computed and the context and pose labels set. The sampling itself is in
`placement.py`, `actions.py` and `interactions.py`.
"""

from __future__ import annotations

import math

import numpy as np

from evad.data.synthetic.config import FALL, JUMP, LIE, RUN, SIT, STAND, TURN, WALK, WAVE, SynthConfig
from evad.data.synthetic.figures import _Actor
from evad.data.synthetic.interactions import _context_labels, _Planner


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
