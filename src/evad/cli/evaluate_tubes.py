"""`evad evaluate tubes`: UCF101-24 / JHMDB frame-mAP and video-mAP (MOC protocol at K = 1, SPEC 11).

evad evaluate tubes --groundtruth UCF101v2-GT.pkl --detections detections.csv --json metrics.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from evad.errors import UserError
from evad.fileio import check_output_file, write_json_atomically


def register(kinds: argparse._SubParsersAction) -> None:
    """Add the ``tubes`` parser to the ``evad evaluate`` sub-commands."""
    parser = kinds.add_parser(
        "tubes",
        help="UCF101-24 / JHMDB frame-mAP and video-mAP (MOC-detector protocol, K = 1)",
        description="Score per-frame detections: frame-mAP at IoU 0.5 over every test frame, and "
        "video-mAP of the tubes linked from them (SPEC section 11). Detections CSV rows: video, "
        "frame (from 1), x1, y1, x2, y2 (pixels), label (0-based index into the ground truth's "
        "labels), score.",
    )
    parser.add_argument(
        "--groundtruth", required=True, type=Path, metavar="GT.pkl", help="ground-truth pickle"
    )
    parser.add_argument("--detections", required=True, type=Path, metavar="DET.csv", help="detections CSV")
    parser.add_argument(
        "--split",
        type=int,
        default=1,
        help="test split, numbered from 1 like data.split (default 1; JHMDB has 1-3)",
    )
    parser.add_argument(
        "--iou",
        nargs="+",
        metavar="T",
        help="video-AP spatio-temporal IoU thresholds; lo:hi averages lo..hi in steps of 0.05 "
        "(default: 0.2 0.5 0.75 0.5:0.95)",
    )
    parser.add_argument(
        "--frame-stride",
        type=int,
        default=1,
        metavar="N",
        help="the detections cover every N-th frame (1, 1+N, ...) of each test video, as evaluation with "
        "data.val_stride=N writes them: frame-mAP counts only those frames and video-mAP is not computed "
        "(default 1: every frame, the protocol)",
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        type=int,
        metavar="ID",
        help="score only these classes, numbered from 1 like data.classes: the means are over them "
        "(what evaluation of a model trained with data.classes reports; default: every class)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the metrics to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.set_defaults(func=run)


def _check_frame_stride(path: Path, detections: Any, groundtruth: Any, step: int) -> None:
    """UserError for detections on frames --frame-stride does not score (each would be a false
    positive); a warning when every detection sits on the frames of a stride that was not given."""
    offsets = detections.frame.astype(np.int64) - 1  # frame 1 is on every stride
    if step > 1:
        off = np.flatnonzero(offsets % step)
        if off.size:
            i = int(off[0])
            video = groundtruth.videos[int(detections.video[i])]
            raise UserError(
                f"{path}: {off.size} detection rows are on frames that --frame-stride {step} does not score "
                f"(first: frame {int(detections.frame[i])} of {video}); they would count as false positives"
            )
        return
    gap = int(np.gcd.reduce(offsets)) if offsets.size else 0
    if gap > 1 and np.unique(offsets).size >= 10:
        print(
            f"evad: warning: {path}: every detection is on frames 1, {1 + gap}, {1 + 2 * gap}, ...; "
            f"if the others were not detected, pass --frame-stride {gap} (they count as missed now)",
            file=sys.stderr,
        )


def _class_indices(path: Path, ids: list[int], count: int) -> list[int]:
    """0-based indices of the 1-based class `ids`, or a UserError naming the ground truth."""
    bad = [c for c in ids if not 1 <= c <= count]
    if bad:
        raise UserError(f"--classes {bad[0]}: {path} has classes 1 to {count}")
    if len(set(ids)) != len(ids):
        raise UserError(f"--classes names a class twice: {ids}")
    return sorted(c - 1 for c in ids)


def run(args: argparse.Namespace) -> int:
    """Score the detections, print the report and write the JSON; UserError on bad input."""
    from evad.evaluation import tubes

    if args.json is not None:
        check_output_file(args.json, args.overwrite, (args.groundtruth, args.detections))
    if args.frame_stride < 1:
        raise UserError(f"--frame-stride must be at least 1, got {args.frame_stride}")
    if args.split < 1:
        raise UserError(f"--split numbers splits from 1, got {args.split}")
    thresholds = args.iou or tubes.DEFAULT_VIDEO_THRESHOLDS
    tubes.parse_iou_thresholds(thresholds)  # fail on a bad threshold before reading anything
    groundtruth = tubes.load_groundtruth(args.groundtruth, split=args.split)
    indices = None
    if args.classes is not None:
        indices = _class_indices(args.groundtruth, args.classes, len(groundtruth.labels))
    detections = tubes.read_detections(args.detections, groundtruth)
    _check_frame_stride(args.detections, detections, groundtruth, args.frame_stride)
    frames = None
    if args.frame_stride > 1:  # (video index, frame) of every scored frame
        step = args.frame_stride
        pairs = [(v, f) for v, n in enumerate(groundtruth.nframes) for f in range(1, int(n) + 1, step)]
        frames = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)  # F (video, frame) pairs -> (F, 2)
    metrics = tubes.evaluate_tubes(groundtruth, detections, thresholds, frames=frames)
    if indices is not None:
        metrics = metrics.subset(indices)

    for warning in metrics.warnings:
        print(f"evad: warning: {warning}", file=sys.stderr)
    names = list(metrics.video_ap)
    width = max([len(label) for label in metrics.labels] + [len("frame-mAP")])
    print(f"{'frame-mAP':<{width}}  {100 * metrics.frame_map:6.2f}   (IoU 0.5, %)")
    for name, value in metrics.video_map.items():
        print(f"{'video-mAP':<{width}}  {100 * value:6.2f}   (IoU {name}, %)")
    if frames is not None:
        print(f"(one frame in {args.frame_stride} scored; video-mAP needs every frame and is not computed)")
    print()
    columns = {name: max(6, len(name) + 2) for name in names}
    print(f"{'AP (%)':<{width}}  {'frame':>6}" + "".join(f"  {'v@' + n:>{w}}" for n, w in columns.items()))
    for c, label in enumerate(metrics.labels):
        video = "".join(f"  {100 * metrics.video_ap[n][c]:{w}.2f}" for n, w in columns.items())
        print(f"{label:<{width}}  {100 * metrics.frame_ap[c]:6.2f}{video}")
    if args.json is not None:
        report = metrics.to_dict()
        if args.classes is not None:
            report["classes"] = list(metrics.labels)
        try:
            write_json_atomically(args.json, report)
        except OSError as err:
            raise UserError(f"{args.json}: cannot write: {err.strerror or err}") from err
        print(f"\nwrote {args.json}")
    return 0
