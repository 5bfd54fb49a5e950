"""Where the time of one EVAD forward pass goes, at each token keep rate (torch.profiler, CPU).

For every keep rate: one untimed warm-up forward pass, then one profiled pass; the ops with the
most self CPU time are printed and all tables are written to a text file. A second table groups
the same time by top-level module (backbone, fpn, localization, classification) so a slow head
stands out next to the backbone it should be small beside.

    .venv/bin/python benchmarks/profile_forward.py                     # vit-b, 224, batch 1
    .venv/bin/python benchmarks/profile_forward.py --model tiny --img-size 64 --batch 8 \
        --keep-rate 1.0 0.7 --out /tmp/profile_tiny.txt

On a 2-core CPU the default run takes about 2 minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from evad.bench import make_clips
from evad.models import create_model

PARTS = ("backbone", "fpn", "localization", "classification")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit-b")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--keep-rate", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7, 0.6])
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--top", type=int, default=25, help="ops to list per keep rate")
    parser.add_argument("--out", type=Path, default=Path("profile_forward.txt"), help="text file to write")
    return parser.parse_args()


def instrument(model: torch.nn.Module) -> None:
    """Wrap each top-level part's forward in a `record_function` range named after it."""
    for name in PARTS:
        part = getattr(model, name)
        forward = part.forward

        def wrapped(*args, _name=name, _forward=forward, **kwargs):
            with record_function(f"## {_name}"):
                return _forward(*args, **kwargs)

        part.forward = wrapped


def part_table(prof: profile) -> str:
    """Wall time of each instrumented part (CPU total of its range) and its share of the pass."""
    totals = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key.startswith("## ")}
    whole = sum(totals.values())
    lines = [f"{'part':<18}{'ms':>10}{'share':>8}"]
    for name in PARTS:
        us = totals.get(f"## {name}", 0.0)
        lines.append(f"{name:<18}{us / 1e3:10.1f}{100 * us / max(whole, 1e-9):7.1f}%")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    instrument(model)
    clips = make_clips(args.batch, model.backbone.num_frames, args.img_size, torch.device("cpu"))
    header = (
        f"{args.model} {args.img_size}x{args.img_size} batch {args.batch}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    sections = [header]
    print(header)
    for rho in args.keep_rate:
        with torch.inference_mode():
            model(clips, keep_rate=rho)  # warm-up: first-call allocations and kernel selection
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                model(clips, keep_rate=rho)
        table = prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=60
        )
        by_shape = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total",
            row_limit=args.top,
            max_name_column_width=60,
            max_shapes_column_width=80,
        )
        text = f"\n=== keep rate {rho} ===\n{part_table(prof)}\n\n{table}\nby input shape:\n{by_shape}"
        print(f"\n=== keep rate {rho} ===\n{part_table(prof)}\n\n{table}")
        sections.append(text)
    args.out.write_text("\n".join(sections))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
