"""`evad train`: train and evaluate a detector from a config file (see `evad.engine.train`).

evad train --config configs/ava_vit-b_16x4_kr0.7.yaml [--resume auto] train.epochs=1 output_dir=out
torchrun --nproc_per_node 8 "$(which evad)" train --config configs/ava_vit-b_16x4_kr0.7.yaml
"""

from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a detector from a config file (single process or under torchrun)",
        description="Train with the recipe of the config (YAML; see configs/), evaluating every "
        "train.eval_every epochs. Writes config.yaml, log.jsonl, last.pt, best.pt and eval/ to "
        "output_dir. Settings can be overridden as section.key=value, e.g. train.epochs=1 "
        "model.keep_rate=0.6 data.classes=[1,2].",
    )
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="YAML file, or a shipped config by name"
    )
    parser.add_argument(
        "--resume",
        metavar="PATH",
        help="continue from a checkpoint; 'auto' = output_dir/last.pt when it exists",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="start over in an output_dir that holds checkpoints"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evad.cli import process_rank
    from evad.config import load_config
    from evad.engine.train import train
    from evad.errors import raised_alike_by_every_process

    logging.basicConfig(level=logging.INFO, format="evad: %(message)s", stream=sys.stderr)
    with raised_alike_by_every_process():
        config = load_config(args.config, args.overrides)
    # SIGTERM stops training as Ctrl-C does (`evad.cli.main`): an evaluation under way saves its epoch.
    try:
        result = train(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except FloatingPointError as err:  # raised by every process alike
        if process_rank() == 0:
            print(f"evad: error: {err}", file=sys.stderr)
        return 1
    if process_rank() == 0:
        best = result["best_metric"]
        shown = "n/a (no evaluation)" if best is None else f"{100 * best:.2f}"
        batches = result["epoch_batches"]
        cut = f" and {batches} batch{'es' if batches > 1 else ''} of the next" if batches else ""
        done = f"{result['epochs']} epochs{cut} ({result['global_step']} steps)"
        print(f"trained {done}; best frame-mAP {shown}")
        print(f"outputs in {config.output_dir}")
    return 0
