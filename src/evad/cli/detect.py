"""`evad detect`: run a detector on video files and write CSV, JSON and an annotated MP4."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evad.errors import UserError

if TYPE_CHECKING:
    from torch import nn


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _positive(kind: type) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="detect actors and actions in video files",
        description="Detect actors and their actions on keyframes of each video (16 x 4 clips around "
        "each keyframe) and write detections.csv (AVA layout, every class), detections.json and "
        "annotated.mp4 (boxes, track ids and actions drawn on every frame). With several videos, "
        "each gets a subfolder of --out named after the video.",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video file(s) PyAV can decode")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="best.pt or last.pt of `evad train` (has classes, input size)")
    source.add_argument("--model", help="model preset with random weights (only to try the pipeline)")
    parser.add_argument("--num-classes", type=_positive(int), help="action classes of --model (default 80)")
    parser.add_argument(
        "--labelmap", help="AVA label map .pbtxt naming the classes (default: ids 1..K named 'class k')"
    )
    parser.add_argument("--out", default="detections", help="output folder (default: detections)")
    parser.add_argument("--keep-rate", type=float, help="token keep rate rho (default: the model's)")
    parser.add_argument("--person-threshold", type=_probability, default=0.7, help="default: 0.7")
    parser.add_argument(
        "--action-threshold", type=_probability, default=0.5, help="actions listed and drawn (default: 0.5)"
    )
    keyframes = parser.add_mutually_exclusive_group()
    keyframes.add_argument(
        "--rate", type=_positive(float), default=1.0, help="keyframes per second (default 1)"
    )
    keyframes.add_argument("--stride", type=_positive(int), help="one keyframe every STRIDE frames instead")
    parser.add_argument(
        "--short-side", type=_positive(int), help="input short side (default: the checkpoint's; 256)"
    )
    parser.add_argument("--batch", type=_positive(int), default=4, help="clips per forward pass (default 4)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


@dataclass
class LoadedModel:
    """A detector ready to run, with what it needs to be run right.

    Attributes:
        model: The detector.
        class_ids: AVA id of each action output.
        class_names: Name of each action output.
        short_side: Input short side the model expects.
    """

    model: nn.Module
    class_ids: list[int]
    class_names: list[str]
    short_side: int


def _class_list(labelmap: str | None, num_classes: int | None) -> tuple[list[int], list[str]]:
    if labelmap is None:
        k = 80 if num_classes is None else num_classes
        return list(range(1, k + 1)), [f"class {i}" for i in range(1, k + 1)]
    from evad.evaluation.ava import read_labelmap

    names = read_labelmap(labelmap)
    if num_classes is not None and num_classes != len(names):
        raise UserError(f"--num-classes {num_classes} but {labelmap} names {len(names)} classes")
    return list(names), list(names.values())


def _load_model(args: argparse.Namespace) -> LoadedModel:
    """The detector named on the command line (the one place that knows where models come from)."""
    from evad.models import create_model

    if args.checkpoint is not None:
        return _load_checkpoint(Path(args.checkpoint), args)
    class_ids, class_names = _class_list(args.labelmap, args.num_classes)
    try:
        model = create_model(args.model, num_classes=len(class_ids))
    except ValueError as err:
        raise UserError(str(err)) from None
    print(
        f"evad: warning: --model {args.model} has random weights; its detections are meaningless",
        file=sys.stderr,
    )
    return LoadedModel(model, class_ids, class_names, args.short_side or 256)


def _load_checkpoint(path: Path, args: argparse.Namespace) -> LoadedModel:
    """A model trained by `evad train`: architecture, classes and input size come from the file."""
    from evad.config import config_from_dict
    from evad.engine import checkpoint as ckpt
    from evad.models import build_model

    state = ckpt.load_checkpoint(path)
    if "config" not in state or "dataset" not in state:
        raise UserError(f"{path}: not a checkpoint of `evad train` (no config or class list stored)")
    config = config_from_dict(state["config"], str(path))
    dataset = state["dataset"]
    class_ids = [int(c) for c in dataset["class_ids"]]
    class_names = [str(n) for n in dataset["class_names"]]
    if args.labelmap is not None:
        from evad.evaluation.ava import read_labelmap

        names = read_labelmap(args.labelmap)
        class_names = [names.get(c, name) for c, name in zip(class_ids, class_names, strict=True)]
    model = build_model(config.model.model_config(len(class_ids)))
    ckpt.load_model_state(model, state["model"], str(path))
    short_side = args.short_side if args.short_side is not None else config.data.test_short_side
    return LoadedModel(model, class_ids, class_names, short_side)


def _output_dirs(videos: list[Path], out: Path) -> list[Path]:
    if len(videos) == 1:
        return [out]
    stems: dict[str, Path] = {}
    for video in videos:
        if video.stem in stems:
            raise UserError(
                f"{stems[video.stem]} and {video} would share the output folder {out / video.stem}"
            )
        stems[video.stem] = video
    return [out / video.stem for video in videos]


def run(args: argparse.Namespace) -> int:
    import torch

    from evad.inference import check_output_dir, detect_video, probe_video

    videos = [Path(v) for v in args.videos]
    out_dirs = _output_dirs(videos, Path(args.out))
    for video, out_dir in zip(videos, out_dirs, strict=True):  # fail before any model runs
        probe_video(video)
        check_output_dir(out_dir, args.overwrite)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available")
    loaded = _load_model(args)
    for video, out_dir in zip(videos, out_dirs, strict=True):
        try:
            result = detect_video(
                loaded.model,
                video,
                out_dir,
                loaded.class_names,
                loaded.class_ids,
                keep_rate=args.keep_rate,
                person_threshold=args.person_threshold,
                action_threshold=args.action_threshold,
                rate=None if args.stride else args.rate,
                stride=args.stride,
                batch_size=args.batch,
                short_side=loaded.short_side,
                device=args.device,
                overwrite=args.overwrite,
                progress=not args.no_progress,
            )
        except ValueError as err:
            raise UserError(f"{video}: {err}") from None
        print(
            f"{video}: {len(result.keyframes)} keyframes, {result.num_detections} detections, "
            f"{result.num_frames} frames -> {out_dir}/ ({result.codec}, {result.seconds:.1f} s)"
        )
    return 0
