"""`evad flops`: multiply-adds of the whole detector in the paper's convention."""

from __future__ import annotations

import argparse
import json

from evad.cli.arguments import keep_rate
from evad.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flops",
        help="count GFLOPs (multiply-adds) of one batch-1 forward pass",
        description="Count GFLOPs as the paper does: one multiply-add = one FLOP, attention matmuls "
        "included, batch 1, square input. --table compares every setting the paper reports.",
    )
    parser.add_argument("--model", help="model preset (default: vit-b)")
    parser.add_argument("--img-size", type=int, help="square input side in pixels (default: 224)")
    parser.add_argument(
        "--keep-rate", type=keep_rate, default=None, help="token keep rate (default: preset's)"
    )
    parser.add_argument("--num-classes", type=int, default=None, help="action classes (default: 80)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--table", action="store_true", help="print the paper comparison as Markdown")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evad.flops import PAPER_GFLOPS, PAPER_PRUNING_GFLOPS, count_flops
    from evad.models import create_model

    if args.table:
        options = {
            "--model": args.model,
            "--img-size": args.img_size,
            "--keep-rate": args.keep_rate,
            "--num-classes": args.num_classes,
            "--json": args.json or None,
        }
        given = [flag for flag, value in options.items() if value is not None]
        if given:
            raise UserError(f"--table counts every setting the paper reports; drop {' and '.join(given)}")
        print(paper_table(PAPER_GFLOPS, PAPER_PRUNING_GFLOPS, count_flops, create_model))
        return 0
    args.model = "vit-b" if args.model is None else args.model
    args.img_size = 224 if args.img_size is None else args.img_size
    args.num_classes = 80 if args.num_classes is None else args.num_classes
    try:
        model = create_model(args.model, num_classes=args.num_classes)
        report = count_flops(model, args.img_size, args.keep_rate)
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        rho = model.backbone.keep_rate if args.keep_rate is None else args.keep_rate
        print(f"{args.model} {args.img_size}x{args.img_size} keep_rate={rho}: {report.gflops:.1f} GFLOPs")
        for name, value in report.by_module.items():
            print(f"  {name.split('.')[-1]:<16}{value:8.2f}")
        print(f"  tokens          {' -> '.join(map(str, report.tokens))}")
    return 0


def paper_table(paper: dict, pruning: dict, count_flops, create_model) -> str:
    """Markdown table of measured vs paper GFLOPs for every setting in `paper` ({(model, size):
    {keep_rate: GFLOPs}}) and every pruning ablation in `pruning` ({strategy: GFLOPs} of ViT-B at 224
    px and keep rate 0.7)."""
    from tqdm import tqdm

    rows = [
        "| model | input | keep rate | GFLOPs (evad) | GFLOPs (paper) | diff | tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    jobs = [
        (name, "attention", size, rho, ref)
        for (name, size), refs in paper.items()
        for rho, ref in refs.items()
    ]
    jobs += [("vit-b", strategy, 224, 0.7, ref) for strategy, ref in pruning.items()]
    models = {}
    for name, strategy, size, rho, ref in tqdm(jobs, desc="counting", leave=False):
        model = models.setdefault((name, strategy), create_model(name, pruning=strategy))
        report = count_flops(model, size, rho)
        diff = 100 * (report.gflops - ref) / ref
        tokens = " → ".join(map(str, report.tokens))
        label = name if strategy == "attention" else f"{name}, {strategy} pruning"
        rows.append(f"| {label} | {size} | {rho} | {report.gflops:.1f} | {ref} | {diff:+.2f}% | {tokens} |")
    return "\n".join(rows)
