"""`evad eval`: evaluate a trained checkpoint on the validation split (see `evad.engine.evaluate`).

evad eval --checkpoint out/best.pt [--config FILE] [--keep-rate 0.6] [--out DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import sys

from evad.cli.arguments import keep_rate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint of `evad train` (frame-mAP, video-mAP)",
        description="Run the checkpoint's model on the validation split of the config's data, write "
        "detections.csv (the `evad evaluate ava|tubes` layout) and metrics.json, and print the "
        "mAP. The architecture always comes from the checkpoint; data and eval settings come "
        "from --config, or from the config stored in the checkpoint.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="last.pt or best.pt, or evad weights (a folder from `evad convert`; needs --config)",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config (default: the checkpoint's)")
    parser.add_argument(
        "--keep-rate",
        type=keep_rate,
        metavar="R",
        help="token keep rate (default: eval.keep_rate, then the model's)",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (default: eval-<ckpt>[-kr<R>] beside it)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace detections.csv and metrics.json in --out"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evad.cli import process_rank
    from evad.engine.eval_checkpoint import evaluate_checkpoint
    from evad.errors import UserError
    from evad.weights.evad_format import is_weights_path

    if args.config is None and is_weights_path(args.checkpoint):
        from evad.engine.checkpoint import load_checkpoint

        load_checkpoint(args.checkpoint)  # weights that cannot detect at all say so first
        raise UserError(f"{args.checkpoint}: evad weights store no data settings; pass --config")
    logging.basicConfig(level=logging.INFO, format="evad: %(message)s", stream=sys.stderr)
    summary = evaluate_checkpoint(
        args.checkpoint,
        args.config,
        args.overrides,
        keep_rate=args.keep_rate,
        out_dir=args.out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if process_rank() != 0:  # under torchrun every process has the summary
        return 0
    print(f"frame-mAP @ IoU 0.5: {100 * summary['frame_mAP']:6.2f} %   (keep rate {summary['keep_rate']:g})")
    ava_groups = any(v is not None for k, v in summary.items() if k.startswith("mAP_"))
    for key, value in summary.items():
        if key.startswith("mAP_") and not ava_groups:  # a label map other than AVA's
            continue
        if key.startswith(("mAP_", "video_mAP", "person_AP")):
            shown = "   n/a" if value is None else f"{100 * value:6.2f}"
            print(f"  {key:<28} {shown} %")
    print(f"wrote {summary['out_dir']}/detections.csv and metrics.json")
    return 0
