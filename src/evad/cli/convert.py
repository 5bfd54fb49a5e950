"""`evad convert`: turn a VideoMAE, Hugging Face or official EVAD checkpoint into evad weights.

evad convert SRC DST [--from auto|videomae|videomae-hf|evad-official|evad] [--official-config FILE]
                     [--model PRESET] [--num-classes K] [--overwrite]

DST is a folder holding ``model.safetensors`` and ``config.json`` (see `evad.weights.evad_format`),
which `evad eval --checkpoint`, `evad detect --checkpoint`, ``model.pretrained`` and
``evad.create_model(..., pretrained=DST)`` read.
"""

from __future__ import annotations

import argparse

from evad.cli.arguments import positive

SOURCE_FORMATS = ("auto", "videomae", "videomae-hf", "evad-official", "evad")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert VideoMAE / Hugging Face / official EVAD weights to evad weights",
        description="Read SRC without running any code in it (safetensors, or torch.load with "
        "weights_only=True), rename its tensors to evad's, check them against the model they "
        "belong to and write DST, a folder with model.safetensors and config.json. SRC may be a "
        "VideoMAE pre-training or fine-tuned checkpoint, a Hugging Face VideoMAE folder "
        "(config.json + model.safetensors or pytorch_model.bin), an official EVAD checkpoint "
        "(with --official-config, unless it stores its config), or evad weights / best.pt.",
    )
    parser.add_argument("src", metavar="SRC", help="checkpoint file or folder")
    parser.add_argument("dst", metavar="DST", help="output folder (model.safetensors + config.json)")
    parser.add_argument(
        "--from",
        dest="source_format",
        choices=SOURCE_FORMATS,
        default="auto",
        help="layout of SRC (default: recognised from its tensor names)",
    )
    parser.add_argument(
        "--official-config", metavar="FILE", help="official EVAD YAML config SRC was trained with"
    )
    parser.add_argument(
        "--model",
        metavar="PRESET",
        help="preset completing a VideoMAE backbone into a detector (default: same width and depth)",
    )
    parser.add_argument(
        "--num-classes", type=positive(int), metavar="K", help="action classes (VideoMAE sources; default 80)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evad.weights import convert_checkpoint
    from evad.weights.evad_format import holds_detector

    result = convert_checkpoint(
        args.src,
        args.dst,
        source_format=args.source_format,
        official_config=args.official_config,
        model=args.model,
        num_classes=args.num_classes,
        overwrite=args.overwrite,
    )
    print(result.report.summary())
    cfg = result.config
    print(
        f"wrote {result.dst}/ (embed_dim {cfg.embed_dim}, depth {cfg.depth}, {cfg.num_classes} classes, "
        f"keep rate {cfg.keep_rate:g})"
    )
    if not holds_detector(result.report.loaded):
        print(
            f"these are backbone weights, not a detector: start training from them with "
            f"model.pretrained={result.dst}; evad detect and evad eval need a trained detector"
        )
    return 0
