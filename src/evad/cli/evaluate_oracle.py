"""`evad evaluate oracle`: how much would GT boxes, or GT labels, raise a detector's AVA frame-mAP?

evad evaluate oracle --groundtruth ava_val_v2.2.csv --detections detections.csv \
    --labelmap ava_action_list_v2.2_for_activitynet_2019.pbtxt [--exclusions EXCL.csv] [--json OUT]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evad.cli.evaluate_ava import add_input_arguments, check_outputs
from evad.cli.messages import warnings_as_lines
from evad.fileio import write_json_atomically


def register(kinds: argparse._SubParsersAction) -> None:
    parser = kinds.add_parser(
        "oracle",
        help="AVA frame-mAP with ground-truth boxes or labels given (localization vs classification)",
        description="Rescore an AVA detections file twice, as in Fig. 1 / Table 7 of the class-queries "
        "paper: with each detection's box replaced by the ground-truth box it is matched to (Hungarian "
        "on IoU), and with its action scores replaced by that ground truth's labels. The larger gain "
        "shows whether localization or classification limits the detector.",
    )
    add_input_arguments(parser)
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evad.evaluation.oracle import oracle_analysis

    check_outputs(args, args.json)
    with warnings_as_lines():
        result = oracle_analysis(args.groundtruth, args.detections, args.labelmap, args.exclusions)
    base = result.detector.mean_ap
    print(f"{'':24s} frame-mAP   gain")
    print(f"{'detector':24s} {100 * base:9.2f}")
    for name, res in (("with GT boxes", result.gt_boxes), ("with GT labels", result.gt_labels)):
        print(f"{name:24s} {100 * res.mean_ap:9.2f} {100 * (res.mean_ap - base):+6.2f}")
    # Compared as printed: gains that print alike name neither.
    gain_boxes = round(100 * (result.gt_boxes.mean_ap - base), 2)
    gain_labels = round(100 * (result.gt_labels.mean_ap - base), 2)
    if gain_boxes == gain_labels:
        print("neither localization nor classification limits this detector more")
    else:
        print(f"{'classification' if gain_labels > gain_boxes else 'localization'} limits this detector more")
    if args.json is not None:
        write_json_atomically(args.json, result.to_dict())
        print(f"wrote {args.json}")
    return 0
