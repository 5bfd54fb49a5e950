"""Where the time of one EVAD forward pass goes, at each token keep rate (torch.profiler).

For every keep rate: untimed warm-up forward passes, then one profiled pass; the ops with the most
self time (CPU time on the CPU, GPU kernel time on CUDA) are printed and all tables are written to a
text file. A second table gives the time of each top-level module (backbone, fpn, localization,
classification) so a slow head stands out next to the backbone it should be small beside. On CUDA
that table comes from a separate pass that synchronizes the device around every module, since the
profiler's CPU ranges end before the kernels they launch have run.

    .venv/bin/python benchmarks/profile_forward.py                     # vit-b, 224, batch 1
    .venv/bin/python benchmarks/profile_forward.py --model tiny --img-size 64 --batch 8 \
        --keep-rate 1.0 0.7 --out /tmp/profile_tiny.txt
    python benchmarks/profile_forward.py --device cuda --dtype bf16 --batch 8 --keep-rate 1.0 0.7

On a 2-core CPU the default run takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from evad.bench import DTYPES, autocast, make_clips, synchronize
from evad.models import create_model

PARTS = ("backbone", "fpn", "localization", "classification")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit-b")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--keep-rate", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7, 0.6])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="autocast dtype")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes before profiling")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--top", type=int, default=25, help="ops to list per keep rate")
    parser.add_argument("--out", type=Path, default=Path("profile_forward.txt"), help="text file to write")
    return parser.parse_args()


def instrument(model: torch.nn.Module, device: torch.device, clock: dict[str, float] | None) -> None:
    """Wrap each top-level part's forward in a `record_function` range named after it; while `clock`
    is a dict (CUDA), also add each part's device-synchronized wall time to it, in microseconds."""
    for name in PARTS:
        part = getattr(model, name)
        forward = part.forward

        def wrapped(*args, _name=name, _forward=forward, **kwargs):
            with record_function(f"## {_name}"):
                if clock is None:
                    return _forward(*args, **kwargs)
                synchronize(device)
                start = time.perf_counter()
                result = _forward(*args, **kwargs)
                synchronize(device)
                clock[_name] += 1e6 * (time.perf_counter() - start)
                return result

        part.forward = wrapped


def part_table(totals: dict[str, float]) -> str:
    """Time of each part (microseconds in `totals`) and its share of the pass."""
    whole = sum(totals.values())
    lines = [f"{'part':<18}{'ms':>10}{'share':>8}"]
    for name in PARTS:
        us = totals.get(name, 0.0)
        lines.append(f"{name:<18}{us / 1e3:10.1f}{100 * us / max(whole, 1e-9):7.1f}%")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model = create_model(args.model).eval().to(device)
    clock: dict[str, float] = defaultdict(float)
    instrument(model, device, clock if cuda else None)
    clips = make_clips(args.batch, model.backbone.num_frames, args.img_size, device)
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} threads"
    header = (
        f"{args.model} {args.img_size}x{args.img_size} batch {args.batch}, {args.dtype}, {where}, "
        f"torch {torch.__version__}"
    )
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    sections = [header]
    print(header)
    for rho in args.keep_rate:
        with torch.inference_mode(), autocast(device, args.dtype):
            for _ in range(args.warmup):  # first-call allocations and kernel selection
                model(clips, keep_rate=rho)
            synchronize(device)
            clock.clear()
            with profile(activities=activities, record_shapes=True) as prof:
                model(clips, keep_rate=rho)
                synchronize(device)
            if cuda:
                clock.clear()  # the profiled pass's clock includes profiler overhead: time another
                model(clips, keep_rate=rho)
                totals = dict(clock)
            else:
                totals = {e.key[3:]: e.cpu_time_total for e in prof.key_averages() if e.key.startswith("## ")}
        table = prof.key_averages().table(sort_by=sort_by, row_limit=args.top, max_name_column_width=60)
        by_shape = prof.key_averages(group_by_input_shape=True).table(
            sort_by=sort_by,
            row_limit=args.top,
            max_name_column_width=60,
            max_shapes_column_width=80,
        )
        parts = part_table(totals)
        text = f"\n=== keep rate {rho} ===\n{parts}\n\n{table}\nby input shape:\n{by_shape}"
        print(f"\n=== keep rate {rho} ===\n{parts}\n\n{table}")
        sections.append(text)
    args.out.write_text("\n".join(sections))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
