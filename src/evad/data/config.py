"""What a dataset is made of: the `data:` section of a training config (SPEC sections 1 and 9).

Paths are relative to `root` unless absolute. One `DataConfig` describes both splits; the
builders in `evad.data` pick the split's files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATA_FORMATS = ("ava", "ucf24", "jhmdb")


@dataclass
class DataConfig:
    """Where the annotations and frames are and how clips are cut and transformed.

    Attributes:
        format: "ava" (CSV + label map, 1 keyframe per second) or "ucf24" / "jhmdb" (ground-truth
            pickle with dense tubes, every annotated frame a keyframe).
        root: Dataset folder; relative paths below are resolved against it.
        frames: Frame folder (`frame_template` inside it) or, when `videos` is set, ignored.
        frame_template: File of 1-based frame number `frame` of `video`, relative to `frames`.
            AVA layout: "{video}/{video}_{frame:06d}.jpg"; MMAction2: "{video}/img_{frame:05d}.jpg";
            UCF101-24: "{video}/{frame:05d}.jpg".
        videos: Folder of video files decoded with PyAV instead of frame folders (AVA format only).
        video_template: File name of `video` inside `videos`.
        train_annotations, val_annotations: AVA CSVs (format "ava").
        train_exclusions, val_exclusions: Optional AVA excluded-timestamps CSVs.
        labelmap: AVA label map .pbtxt (format "ava"): every action id of the CSVs must be in it.
        eval_labelmap: Score only this label map's classes (AVA: train on the 80 classes of
            ava_action_list_v2.2.pbtxt as the official model does, score the 60 of the ActivityNet
            label map); None scores every trained class.
        groundtruth: UCF101-24 / JHMDB ground-truth pickle (formats "ucf24", "jhmdb").
        split: JHMDB split (1, 2 or 3); ignored for UCF101-24 (one split).
        fps: Frame rate of the frame folders (AVA: 30; UCF101-24: 25). AVA keyframe seconds are
            counted in it; `evad detect` cuts clips of any video at this rate.
        timestamp_start: AVA second of frame 1 (900 for the 15-minute cut; 0 for the synthetic set).
        num_frames, sampling_rate: Clip length and stride (16x4: offsets -32 ... +28). Stride 0
            repeats the keyframe: a keyframe-only input with the same shape (an ablation).
        classes: Train and evaluate on this subset of class ids (AVA ids, or 1-based tube labels);
            None keeps every class of the label map / pickle.
        train_short_side: Short-side sizes to draw from in training (several = scale jitter).
        test_short_side: Short side at test time.
        max_long_side: Long side cap after resizing (1333).
        flip_prob: Horizontal flip probability in training.
        color_jitter: Training colour jitter strength a (brightness, contrast and saturation factors
            in [1 - a, 1 + a], one draw per clip); 0 = none, as in the paper.
        size_divisor: Batches are zero-padded to a multiple of this.
        mean, std: Pixel normalisation of RGB in [0, 1].
        train_stride: UCF/JHMDB only: use every n-th annotated frame as a training keyframe.
        val_stride: UCF/JHMDB only: evaluate every n-th frame (1 = every test frame, the protocol).
            Frame-mAP then counts only those frames' ground truth; video-mAP, which links every
            frame, is left out.
        num_workers: DataLoader worker processes.
    """

    format: str = "ava"
    root: str = "."
    frames: str = "frames"
    frame_template: str = "{video}/{video}_{frame:06d}.jpg"
    videos: str | None = None
    video_template: str = "{video}.mp4"
    train_annotations: str | None = None
    val_annotations: str | None = None
    train_exclusions: str | None = None
    val_exclusions: str | None = None
    labelmap: str | None = None
    eval_labelmap: str | None = None
    groundtruth: str | None = None
    split: int = 1
    fps: float = 30.0
    timestamp_start: int = 900
    num_frames: int = 16
    sampling_rate: int = 4
    classes: list[int] | None = None
    train_short_side: list[int] = field(default_factory=lambda: [256])
    test_short_side: int = 256
    max_long_side: int = 1333
    flip_prob: float = 0.5
    color_jitter: float = 0.0
    size_divisor: int = 32
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    train_stride: int = 1
    val_stride: int = 1
    num_workers: int = 2

    def __post_init__(self) -> None:
        if self.format not in DATA_FORMATS:
            raise ValueError(f"data.format must be one of {DATA_FORMATS}, got {self.format!r}")
        if isinstance(self.train_short_side, int):
            self.train_short_side = [self.train_short_side]
        self.train_short_side = [int(s) for s in self.train_short_side]
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"data.color_jitter must be in [0, 1), got {self.color_jitter}")
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
