"""`evad evaluate ava`: AVA frame-mAP with the official ActivityNet protocol (SPEC section 10).

evad evaluate ava --groundtruth ava_val_v2.2.csv --detections detections.csv \
    --labelmap ava_action_list_v2.2_for_activitynet_2019.pbtxt \
    --exclusions ava_val_excluded_timestamps_v2.2.csv --json metrics.json [--plot ap.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evad.cli.arguments import non_negative_int
from evad.cli.messages import warnings_as_lines
from evad.errors import UserError
from evad.evaluation.ava import MAX_DETECTIONS_PER_KEYFRAME
from evad.fileio import check_output_file, write_atomically, write_json_atomically

if TYPE_CHECKING:
    from evad.evaluation.ava import AvaResult

_GROUP_TITLES = {
    "person_movement": "person movement (ids <= 14)",
    "object_manipulation": "object manipulation (15-63)",
    "person_interaction": "person interaction (>= 64)",
}


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """--groundtruth, --detections, --labelmap and --exclusions of an AVA scoring command."""
    parser.add_argument("--groundtruth", required=True, type=Path, metavar="GT.csv", help="ground-truth CSV")
    parser.add_argument("--detections", required=True, type=Path, metavar="DET.csv", help="detections CSV")
    parser.add_argument("--labelmap", required=True, type=Path, metavar="MAP.pbtxt", help="label map")
    parser.add_argument("--exclusions", type=Path, metavar="EXCL.csv", help="excluded timestamps CSV")


def register(kinds: argparse._SubParsersAction) -> None:
    """Add the ``ava`` parser to the ``evad evaluate`` sub-commands."""
    parser = kinds.add_parser(
        "ava",
        help="AVA frame-mAP at IoU 0.5 (official ActivityNet protocol)",
        description="Score AVA detections with the official ActivityNet rules (SPEC section 10): "
        "per-class PASCAL VOC AP at IoU 0.5 over the label map's classes, at most 50 detections per "
        "keyframe (--max-per-keyframe), excluded keyframes skipped. Detections CSV rows: video_id, "
        "second, x1, y1, x2, y2 (normalised), action_id, score.",
    )
    add_input_arguments(parser)
    parser.add_argument(
        "--max-per-keyframe",
        type=non_negative_int,
        default=MAX_DETECTIONS_PER_KEYFRAME,
        metavar="N",
        help=f"detections kept per keyframe, best first (default {MAX_DETECTIONS_PER_KEYFRAME}, the "
        "ActivityNet scorer's cap; 0 keeps all)",
    )
    parser.add_argument(
        "--input-order",
        action="store_true",
        help="match each keyframe's detections in file order (evad's: the model's query order), not "
        "by descending score; needs --max-per-keyframe 0. Both together score as the evaluation in "
        "EVAD's own code, which made the paper's numbers",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the metrics to this JSON file")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="OUT.png",
        help="also draw per-class AP as a bar chart (needs matplotlib)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="OTHER.json",
        help="with --plot: draw this earlier --json result beside it",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing --json / --plot files")
    parser.set_defaults(func=run)


def check_outputs(args: argparse.Namespace, *outputs: Path | None) -> None:
    """`check_output_file` for each output given, against the inputs `add_input_arguments` adds."""
    inputs = (
        args.groundtruth,
        args.detections,
        args.labelmap,
        args.exclusions,
        getattr(args, "compare", None),
    )
    given = [path for path in outputs if path is not None]
    for i, path in enumerate(given):
        for other in given[:i]:
            if path.resolve() == other.resolve():  # links followed
                raise UserError(f"{other} and {path} name the same output file; give each its own")
        check_output_file(path, args.overwrite, inputs)


def _read_result_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a JSON file ({err})") from None
    if not (isinstance(data, dict) and isinstance(data.get("per_class"), dict) and "mAP" in data):
        raise UserError(f"{path}: not an `evad evaluate ava --json` result (no mAP / per_class)")
    return data


def format_report(result: AvaResult) -> str:
    """The printed report: mAP, group means and a per-class table (AP in %)."""
    lines = [f"frame-mAP @ IoU 0.5: {100 * result.mean_ap:6.2f} %   ({len(result.per_class)} classes)"]
    groups = result.groups if any(v is not None for v in result.groups.values()) else {}  # not AVA's map
    for group, value in groups.items():
        shown = "   n/a" if value is None else f"{100 * value:6.2f}"
        lines.append(f"  {_GROUP_TITLES.get(group, group):<30} {shown} %")
    width = max([len(name) for name in result.class_names.values()] + [len("class")])
    lines += ["", f"{'id':>4}  {'class':<{width}}  {'AP (%)':>7}  {'#gt':>6}  {'#det':>7}"]
    for class_id, ap in result.per_class.items():
        name = result.class_names[class_id]
        gt, det = result.num_groundtruth[class_id], result.num_detections[class_id]
        lines.append(f"{class_id:>4}  {name:<{width}}  {100 * ap:7.2f}  {gt:>6}  {det:>7}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Score the detections, print the report, write the JSON and picture; UserError on bad input."""
    from evad.evaluation.ava import evaluate_ava_files
    from evad.viz.ap_chart import plot_per_class_ap

    if args.compare is not None and args.plot is None:
        raise UserError("--compare needs --plot")
    if args.input_order and args.max_per_keyframe:
        raise UserError(
            "--input-order (EVAD's own evaluation) keeps every detection: add --max-per-keyframe 0"
        )
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UserError(f"--plot {args.plot}: the chart is written as PNG; give a .png file name")
    check_outputs(args, args.json, args.plot)
    compare = _read_result_json(args.compare) if args.compare is not None else None
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("--plot needs matplotlib (pip install matplotlib)") from None

    with warnings_as_lines():
        result = evaluate_ava_files(
            args.groundtruth,
            args.detections,
            args.labelmap,
            args.exclusions,
            args.max_per_keyframe,
            args.input_order,
        )

    written = []
    if args.json is not None:
        data = result.to_dict()
        data["files"] = {
            "groundtruth": str(args.groundtruth),
            "detections": str(args.detections),
            "labelmap": str(args.labelmap),
            "exclusions": None if args.exclusions is None else str(args.exclusions),
        }
        write_json_atomically(args.json, data)
        written.append(args.json)
    if args.plot is not None:
        labels = (args.detections.stem, args.compare.stem if args.compare is not None else "")
        write_atomically(args.plot, lambda tmp: plot_per_class_ap(tmp, result, compare, labels))
        written.append(args.plot)
    print(format_report(result))
    for path in written:
        print(f"wrote {path}")
    return 0
