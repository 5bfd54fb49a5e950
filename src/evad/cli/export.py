"""`evad export`: write the detector's inference path as an ONNX or TorchScript file (evad.export)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from evad.cli.arguments import keep_rate, positive
from evad.errors import UserError
from evad.fileio import make_dirs

if TYPE_CHECKING:
    from evad.inference.pretrained import LoadedModel


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the detector to ONNX or TorchScript",
        description="Trace the inference path (backbone at a fixed keep rate, both branches, box and "
        "score post-processing) at one input shape and write it as ONNX or TorchScript. The file takes "
        "clips (B, 3, T, H, W) plus image_sizes and target_sizes (B, 2) as (height, width) and returns "
        "boxes (B, Q, 4), person_scores (B, Q) and action_scores (B, Q, K) for every query; keeping the "
        "queries with person_scores >= 0.7 is left to the caller. Without --checkpoint and --model the "
        "small packaged model trained on the synthetic benchmark is exported.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="best.pt / last.pt of `evad train` or an evad weights folder")
    source.add_argument("--model", help="model preset with random weights (only to try the export)")
    parser.add_argument("--num-classes", type=positive(int), help="action classes of --model (default 80)")
    parser.add_argument("--labelmap", help="AVA label map .pbtxt naming the classes in the file's metadata")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="default: onnx")
    parser.add_argument("--keep-rate", type=keep_rate, help="token keep rate rho (default: the model's)")
    parser.add_argument(
        "--img-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="clip height and width, multiples of the patch size (default: the model's short side, square)",
    )
    parser.add_argument("--batch", type=positive(int), default=1, help="clips per call (default 1)")
    parser.add_argument(
        "--out",
        help="file to write: .onnx for onnx, .pt, .pth or .ts for torchscript "
        "(default: evad_HxW_krRHO.onnx or evad_HxW_krRHO.torchscript.pt)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--opset", type=int, help="ONNX opset, 16 to 20 (default 17)")
    parser.add_argument(
        "--no-size-inputs",
        action="store_true",
        help="take clips only (unpadded; boxes in clip pixels) instead of clips, image_sizes, target_sizes",
    )
    parser.set_defaults(func=run)


def _load(args: argparse.Namespace) -> LoadedModel:
    from evad.inference.pretrained import load_detector

    return load_detector(args.checkpoint, args.model, num_classes=args.num_classes, labelmap=args.labelmap)


def run(args: argparse.Namespace) -> int:
    import time

    from evad import export
    from evad.layers.token_pruning import check_keep_rate

    if args.opset is not None and args.format != "onnx":
        raise UserError("--opset applies to --format onnx only")
    if args.out is not None:  # fail before loading a model: extension, existing file, folder
        export.check_destination(args.out, args.format, args.overwrite, (args.checkpoint, args.labelmap))
    loaded = _load(args)
    model = loaded.model.eval()
    try:
        rho = model.backbone.keep_rate if args.keep_rate is None else check_keep_rate(args.keep_rate)
    except ValueError as err:
        raise UserError(f"--keep-rate: {err}") from None
    size = args.img_size or (loaded.inputs.short_side, loaded.inputs.short_side)
    try:
        h, w = export.check_img_size(model, size)
    except ValueError as err:
        raise UserError(f"--img-size {size[0]} {size[1]}: {err}") from None
    path = Path(args.out or f"evad_{h}x{w}_kr{rho:g}{export.DEFAULT_SUFFIXES[args.format]}")
    # Again: for a default name, and the folder may have changed while the model loaded.
    export.check_destination(path, args.format, args.overwrite, (args.checkpoint, args.labelmap))
    make_dirs(path.parent)

    metadata = {
        "source": loaded.source,
        "class_ids": loaded.class_ids,
        "class_names": loaded.class_names,
        "input_settings": asdict(loaded.inputs),
    }
    common = {
        "keep_rate": rho,
        "batch_size": args.batch,
        "size_inputs": not args.no_size_inputs,
        "metadata": metadata,
    }
    if loaded.random_weights:
        print(f"evad: warning: --model {args.model} has random weights", file=sys.stderr)
    start = time.perf_counter()
    try:
        if args.format == "onnx":
            opset = export.DEFAULT_OPSET if args.opset is None else args.opset
            export.export_onnx(model, path, (h, w), opset=opset, **common)
        else:
            export.export_torchscript(model, path, (h, w), **common)
    except ValueError as err:
        raise UserError(str(err)) from None
    seconds = time.perf_counter() - start
    shape = f"{args.batch}x3x{model.backbone.num_frames}x{h}x{w}"
    mib = path.stat().st_size / 2**20
    print(f"wrote {path} ({args.format}, clips {shape}, keep rate {rho:g}, {mib:.1f} MiB) in {seconds:.1f} s")
    return 0
