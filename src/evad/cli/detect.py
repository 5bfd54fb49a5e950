"""`evad detect`: run a detector on video files and write CSV, JSON and an annotated MP4."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from evad.cli.arguments import device, keep_rate, non_negative_int, positive, probability
from evad.cli.messages import warnings_as_lines
from evad.errors import UserError

if TYPE_CHECKING:
    from evad.inference.pretrained import LoadedModel

EXAMPLE_SECONDS = 4


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--checkpoint / --model / --num-classes / --labelmap (shared with `evad visualize`)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint",
        help="best.pt / last.pt of `evad train` or an evad weights folder (`evad convert`); "
        "default: the packaged model",
    )
    source.add_argument("--model", help="model preset with random weights (only to try the pipeline)")
    parser.add_argument("--num-classes", type=positive(int), help="action classes of --model (default 80)")
    parser.add_argument(
        "--labelmap", help="AVA label map .pbtxt naming the classes (default: ids 1..K named 'class k')"
    )


def load_model(args: argparse.Namespace) -> LoadedModel:
    """The detector named on the command line (`evad.inference.load_detector`)."""
    from evad.inference.pretrained import load_detector

    loaded = load_detector(
        args.checkpoint,
        args.model,
        num_classes=args.num_classes,
        labelmap=args.labelmap,
        short_side=args.short_side,
    )
    if loaded.random_weights:
        print(
            f"evad: warning: --model {args.model} has random weights; its detections are meaningless",
            file=sys.stderr,
        )
    return loaded


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="detect actors and actions in video files",
        description="Detect actors and their actions on keyframes of each video (16 x 4 clips around "
        "each keyframe, sampled at the frame rate the model was trained on, 30 fps for AVA, whatever "
        "the video's rate) and write detections.csv (AVA layout, every class), detections.json and "
        "annotated.mp4 (boxes, track ids and actions drawn on every frame). With several videos, "
        "each gets a subfolder of --out named after the video. Without --checkpoint and --model "
        "the small packaged model trained on the synthetic benchmark is used.",
    )
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="video file(s) PyAV can decode")
    parser.add_argument(
        "--example",
        action="store_true",
        help=f"render a {EXAMPLE_SECONDS} s synthetic clip to OUT/example.mp4 and detect on it (no VIDEO)",
    )
    add_model_arguments(parser)
    parser.add_argument("--out", default="detections", help="output folder (default: detections)")
    parser.add_argument("--keep-rate", type=keep_rate, help="token keep rate rho (default: the model's)")
    parser.add_argument(
        "--person-threshold",
        type=probability,
        help="default: the checkpoint's evaluation threshold (0.7 unless its training changed it)",
    )
    parser.add_argument(
        "--action-threshold", type=probability, default=0.5, help="actions listed and drawn (default: 0.5)"
    )
    keyframes = parser.add_mutually_exclusive_group()
    keyframes.add_argument(
        "--rate", type=positive(float), default=1.0, help="keyframes per second (default 1)"
    )
    keyframes.add_argument("--stride", type=positive(int), help="one keyframe every STRIDE frames instead")
    parser.add_argument(
        "--short-side", type=positive(int), help="input short side (default: the checkpoint's; 256)"
    )
    parser.add_argument("--batch", type=positive(int), default=4, help="clips per forward pass (default 4)")
    parser.add_argument(
        "--video-min-side",
        type=non_negative_int,
        default=360,
        help="annotated.mp4 is the input enlarged by a whole factor to at least this short side, so "
        "labels stay readable on small videos (default 360; 0: the input's size)",
    )
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


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


def _refuse_replacing_inputs(videos: list[Path], out_dirs: list[Path]) -> None:
    """Even with --overwrite, no result may replace an input video (`detect out/annotated.mp4`)."""
    from evad.inference.results import OUTPUT_FILES

    for out_dir in out_dirs:
        for output in (out_dir / name for name in OUTPUT_FILES):
            for video in videos:
                if output.exists() and os.path.samefile(output, video):
                    raise UserError(
                        f"{video}: the input video would be replaced by {output}; choose another --out"
                    )


def run(args: argparse.Namespace) -> int:
    from evad.engine.distributed import resolve_device
    from evad.inference import check_output_dir, probe_video

    if args.example == bool(args.videos):
        raise UserError(
            "give VIDEO file(s) or --example, not both" if args.example else "give a VIDEO or --example"
        )
    resolve_device(args.device, "--device")
    if args.example:
        from evad.inference.example import EXAMPLE_VIDEO

        videos = [Path(args.out) / EXAMPLE_VIDEO]
        check_output_dir(args.out, args.overwrite)
        if videos[0].exists() and not args.overwrite:
            raise UserError(f"{videos[0]} already exists; pass --overwrite to replace it")
        out_dirs = [Path(args.out)]
    else:
        videos = [Path(v) for v in args.videos]
        out_dirs = _output_dirs(videos, Path(args.out))
        for video, out_dir in zip(videos, out_dirs, strict=True):  # fail before any model runs
            probe_video(video)
            check_output_dir(out_dir, args.overwrite)
        _refuse_replacing_inputs(videos, out_dirs)
    with warnings_as_lines():
        loaded = load_model(args)
    if args.example:
        from evad.inference.example import write_example_video

        write_example_video(videos[0], EXAMPLE_SECONDS, overwrite=args.overwrite)
        print(f"wrote a {EXAMPLE_SECONDS} s synthetic example video to {videos[0]}")
    for video, out_dir in zip(videos, out_dirs, strict=True):
        try:
            with warnings_as_lines():
                result = loaded.detect(
                    video,
                    out_dir,
                    keep_rate=args.keep_rate,
                    person_threshold=chosen_person_threshold(args, loaded),
                    action_threshold=args.action_threshold,
                    rate=None if args.stride else args.rate,
                    stride=args.stride,
                    batch_size=args.batch,
                    video_min_side=args.video_min_side,
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


def chosen_person_threshold(args: argparse.Namespace, loaded: LoadedModel) -> float:
    """--person-threshold, else the loaded model's own."""
    return loaded.person_threshold if args.person_threshold is None else args.person_threshold
