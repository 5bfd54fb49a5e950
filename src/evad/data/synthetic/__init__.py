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
    ClassKind,
    SynthClass,
    SynthConfig,
    SynthSummary,
)
from evad.data.synthetic.render import render_frames
from evad.data.synthetic.scene import SynthVideo, simulate_video
from evad.data.synthetic.writer import ANNOTATIONS, LAYOUTS, generate

__all__ = [
    "ANNOTATIONS",
    "CARRY",
    "FALL",
    "JUMP",
    "LAYOUTS",
    "LIE",
    "POINT",
    "RUN",
    "SHAKE",
    "SIT",
    "STAND",
    "SYNTH_CLASSES",
    "TALK",
    "TURN",
    "WALK",
    "WAVE",
    "ClassKind",
    "SynthClass",
    "SynthConfig",
    "SynthSummary",
    "SynthVideo",
    "generate",
    "render_frames",
    "simulate_video",
]
