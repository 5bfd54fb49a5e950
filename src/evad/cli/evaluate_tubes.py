"""`evad evaluate tubes`: UCF101-24 / JHMDB frame-mAP and video-mAP (MOC protocol at K = 1, SPEC 11).

evad evaluate tubes --groundtruth UCF101v2-GT.pkl --detections detections.csv --json metrics.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evad.errors import UserError
from evad.fileio import write_json_atomically


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
        "--split", type=int, default=0, help="index into the pickle's test_videos (default 0; JHMDB has 0-2)"
    )
    parser.add_argument(
        "--iou",
        nargs="+",
        metavar="T",
        help="video-AP spatio-temporal IoU thresholds; lo:hi averages lo..hi in steps of 0.05 "
        "(default: 0.2 0.5 0.75 0.5:0.95)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the metrics to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score the detections, print the report and write the JSON; UserError on bad input."""
    from evad.evaluation import tubes

    if args.json is not None:
        if args.json.exists() and not args.overwrite:
            raise UserError(f"{args.json} exists; pass --overwrite to replace it")
        if not args.json.parent.is_dir():
            raise UserError(f"{args.json}: directory {args.json.parent} does not exist")
    thresholds = args.iou or tubes.DEFAULT_VIDEO_THRESHOLDS
    tubes.parse_iou_thresholds(thresholds)  # fail on a bad threshold before reading anything
    groundtruth = tubes.load_groundtruth(args.groundtruth, split=args.split)
    detections = tubes.read_detections(args.detections, groundtruth)
    metrics = tubes.evaluate_tubes(groundtruth, detections, thresholds)

    for warning in metrics.warnings:
        print(f"evad: warning: {warning}", file=sys.stderr)
    names = list(metrics.video_ap)
    width = max([len(label) for label in metrics.labels] + [len("frame-mAP")])
    print(f"{'frame-mAP':<{width}}  {100 * metrics.frame_map:6.2f}   (IoU 0.5, %)")
    for name, value in metrics.video_map.items():
        print(f"{'video-mAP':<{width}}  {100 * value:6.2f}   (IoU {name}, %)")
    print()
    columns = {name: max(6, len(name) + 2) for name in names}
    print(f"{'AP (%)':<{width}}  {'frame':>6}" + "".join(f"  {'v@' + n:>{w}}" for n, w in columns.items()))
    for c, label in enumerate(metrics.labels):
        video = "".join(f"  {100 * metrics.video_ap[n][c]:{w}.2f}" for n, w in columns.items())
        print(f"{label:<{width}}  {100 * metrics.frame_ap[c]:6.2f}{video}")
    if args.json is not None:
        try:
            write_json_atomically(args.json, metrics.to_dict())
        except OSError as err:
            raise UserError(f"{args.json}: cannot write: {err.strerror or err}") from err
        print(f"\nwrote {args.json}")
    return 0
