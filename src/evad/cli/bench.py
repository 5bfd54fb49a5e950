"""`evad bench`: GFLOPs, throughput, latency and memory at several keep rates, side by side.

evad bench --model vit-b --img-size 224 --keep-rate 1.0 0.9 0.8 0.7 0.6 --batch 8 --json bench.json
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from evad.cli.arguments import keep_rate
from evad.errors import UserError
from evad.fileio import check_output_file

DEFAULT_KEEP_RATES = (1.0, 0.9, 0.8, 0.7, 0.6)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure GFLOPs, clips/s, latency and memory at several token keep rates",
        description="Measure every keep rate (and input size) in one run: GFLOPs of a batch-1 forward "
        "pass, inference clips/s and latency per batch (median and p90), and the peak memory of one "
        "batch above the memory held before it (activations and temporaries; weights excluded). "
        "CUDA: torch.cuda.max_memory_allocated; CPU: PyTorch's CPU allocations recorded by "
        "torch.profiler. --train adds the time and peak memory of a training step (forward, losses "
        "on synthetic targets, backward, AdamW step). Keep rates are timed in interleaved rounds "
        "after warm-up. JSON: {'results': [{keep_rate, img_size, gflops, tokens, clips_per_s, "
        "latency_ms, latency_p90_ms, peak_mem_mb, train_step_ms, train_peak_mem_mb}, ...], device, "
        "torch, threads, dtype, batch, train_batch, model, date, command, ...}; train fields are null "
        "without --train.",
    )
    parser.add_argument("--model", default="vit-b", help="model preset (default: vit-b)")
    parser.add_argument(
        "--img-size",
        type=int,
        nargs="+",
        default=[224],
        metavar="S",
        help="square input sides (default: 224)",
    )
    parser.add_argument(
        "--keep-rate",
        type=keep_rate,
        nargs="+",
        default=list(DEFAULT_KEEP_RATES),
        metavar="RHO",
        help="token keep rates in (0, 1] (default: 1.0 0.9 0.8 0.7 0.6)",
    )
    parser.add_argument("--batch", type=int, default=8, help="clips per inference call (default: 8)")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu"
    )
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast dtype")
    parser.add_argument("--backbone-only", action="store_true", help="time and count the backbone alone")
    parser.add_argument("--train", action="store_true", help="also measure full training steps")
    parser.add_argument(
        "--train-batch", type=int, default=None, help="clips per training step (default: --batch)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per setting (default: 2)")
    parser.add_argument("--iters", type=int, default=10, help="timed calls per setting (default: 10)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run through torch.compile; the warm-up calls compile one graph per setting (slow)",
    )
    parser.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    """Raise UserError on any argument mistake, before the (long) measurement starts."""
    from evad.models import get_config
    from evad.models.detector import check_input_size

    try:
        cfg = get_config(args.model, num_classes=args.num_classes)
    except ValueError as err:
        raise UserError(f"--model: {err}") from None
    for size in args.img_size:
        try:
            check_input_size(size, size, cfg.patch_size)
        except ValueError as err:
            raise UserError(f"--img-size: {err}") from None
    for name in ("batch", "train_batch", "iters", "threads", "num_classes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be at least 1, got {value}")
    if args.warmup < 0:
        raise UserError(f"--warmup: must be at least 0, got {args.warmup}")
    if args.compile and args.warmup < 1:
        raise UserError("--compile needs --warmup >= 1 (the first call of each setting compiles)")
    if args.train and args.backbone_only:
        raise UserError("--train needs the whole detector; drop --backbone-only")
    if args.json is not None:
        check_output_file(args.json, args.overwrite)


def _command_line(args: argparse.Namespace) -> str:
    """The `evad bench` command that reproduces this run, rebuilt from the parsed arguments."""
    parts = ["evad", "bench", "--model", args.model, "--img-size", *map(str, args.img_size)]
    parts += ["--keep-rate", *(f"{r:g}" for r in args.keep_rate), "--batch", str(args.batch)]
    parts += ["--num-classes", str(args.num_classes), "--device", args.device, "--dtype", args.dtype]
    parts += ["--warmup", str(args.warmup), "--iters", str(args.iters), "--threads", str(args.threads)]
    if args.train_batch is not None:
        parts += ["--train-batch", str(args.train_batch)]
    parts += [
        flag
        for flag in ("--backbone-only", "--train", "--compile")
        if getattr(args, flag[2:].replace("-", "_"))
    ]
    if args.json is not None:
        parts += ["--json", str(args.json)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    import datetime

    import torch

    from evad import bench
    from evad.engine.distributed import resolve_device
    from evad.fileio import write_json_atomically
    from evad.models import build_criterion, build_model, get_config

    _check_args(args)
    args.device = str(resolve_device(args.device, "--device"))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    keep_rates = list(dict.fromkeys(args.keep_rate))
    img_sizes = list(dict.fromkeys(args.img_size))

    cfg = get_config(args.model, num_classes=args.num_classes)
    torch.manual_seed(0)
    model = build_model(cfg)
    results = bench.run_sweep(
        model,
        img_sizes,
        keep_rates,
        batch=args.batch,
        device=args.device,
        dtype=args.dtype,
        warmup=args.warmup,
        iters=args.iters,
        backbone_only=args.backbone_only,
        criterion=build_criterion(cfg) if args.train else None,
        train_batch=args.train_batch,
        compile=args.compile,
    )
    device = torch.device(args.device)
    part = "backbone" if args.backbone_only else "detector"
    print(
        f"{args.model} {part}, {bench.describe_device(device)}, {args.threads} threads, {args.dtype}, "
        f"batch {args.batch}" + (f", train batch {args.train_batch or args.batch}" if args.train else "")
    )
    print(bench.format_table(results))
    record = {
        "results": [r.as_dict() for r in results],
        "device": bench.describe_device(device),
        "torch": torch.__version__,
        "threads": args.threads,
        "dtype": args.dtype,
        "batch": args.batch,
        "train_batch": (args.train_batch or args.batch) if args.train else None,
        "model": args.model,
        "backbone_only": args.backbone_only,
        "compile": args.compile,
        "warmup": args.warmup,
        "iters": args.iters,
        "static_mem_mb": round(bench.static_memory_mb(model.backbone if args.backbone_only else model), 1),
        "train_static_mem_mb": round(bench.static_memory_mb(model, optimizer_states=2), 1)
        if args.train
        else None,
        "memory": "peak_mem_mb: peak tensor memory above the level before the call (weights and "
        "optimizer state excluded, see static_mem_mb); "
        + (
            "torch.cuda.max_memory_allocated" if device.type == "cuda" else "CPU allocator via torch.profiler"
        ),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": _command_line(args),
    }
    if args.json is not None:
        try:
            write_json_atomically(args.json, record)
        except OSError as err:
            raise UserError(f"{args.json}: cannot write: {err.strerror or err}") from err
        print(f"wrote {args.json}")
    return 0
