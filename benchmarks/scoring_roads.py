"""Token-pruning scores by explicit attention blocks ("blockwise") or fused kernels ("transposed").

Pruning layers score every token by a weighted sum of their attention map's rows
(`evad.layers.attention`). On CUDA and the CPU the default takes the scores from fused attention
calls; this script times both roads side by side, rounds interleaved, on:

- ``layer``: one pruning layer's attention (`Attention.forward_with_scores`, inference) at ViT-B
  width, for each ``--tokens`` count;
- ``train``: one training step of the demo's detector (`configs/synthetic_tiny.yaml`: tiny preset,
  keep rate 0.7) on random clips of the demo's padded size and random boxes;
- ``detect``: one inference pass of a preset detector (default ViT-B at 224, keep rate 0.7).

    python benchmarks/scoring_roads.py --what layer train --threads 2
    python benchmarks/scoring_roads.py --what detect --batch 8 --iters 3 --threads 2

Prints the median and the range of each road's times, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from evad.bench import interleaved_times, make_clips, synthetic_targets, train_step
from evad.config import load_config
from evad.layers.attention import Attention, scoring_method
from evad.models import build_criterion, build_model, create_model

ROADS = ("blockwise", "transposed")
DEMO_CONFIG = "src/evad/configs/synthetic_tiny.yaml"
DEMO_CLIP = (16, 128, 192)  # frames, padded height and width of the demo's batches


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", nargs="+", choices=("layer", "train", "detect"), default=["layer", "train"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1568, 1098], help="layer: sequence lengths")
    parser.add_argument("--model", default="vit-b", help="detect: preset name")
    parser.add_argument("--img-size", type=int, default=224, help="detect: clip side")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def by_road(make_step, args: argparse.Namespace) -> dict[str, list[float]]:
    """Interleaved times (ms) of `make_step()` run under each scoring road."""

    def under(road: str):
        step = make_step()

        def call() -> None:
            with scoring_method(road):
                step()

        return call

    times = interleaved_times(
        {road: under(road) for road in ROADS}, args.warmup, args.iters, torch.device("cpu"), lambda: None
    )
    return {road: [1e3 * t for t in values] for road, values in times.items()}


def report(label: str, times: dict[str, list[float]]) -> None:
    parts = [f"{road} {statistics.median(t):.0f} ({min(t):.0f}-{max(t):.0f})" for road, t in times.items()]
    ratio = statistics.median(times["blockwise"]) / statistics.median(times["transposed"])
    print(f"{label}: {' | '.join(parts)} ms; blockwise / transposed = {ratio:.2f}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if "layer" in args.what:
        attention = Attention(768, 12).eval()
        for n in args.tokens:
            x = torch.randn(args.batch, n, 768)  # (B, N, C)
            weights = torch.full((n,), 1.0 / n)

            def make_step(x=x, weights=weights):
                return lambda: attention.forward_with_scores(x, weights)

            with torch.no_grad():
                report(f"ViT-B pruning layer, batch {args.batch}, N = {n}", by_road(make_step, args))
    if "train" in args.what:
        config = load_config(DEMO_CONFIG)
        model_cfg = config.model.model_config(13)
        model, criterion = build_model(model_cfg), build_criterion(model_cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        frames, height, width = DEMO_CLIP
        clips = torch.randn(args.batch, 3, frames, height, width)
        targets = synthetic_targets(args.batch, height, 13, torch.device("cpu"))
        step = train_step(model, criterion, optimizer, clips, targets, None, torch.device("cpu"), "fp32")
        report(f"demo training step, batch {args.batch}", by_road(lambda: step, args))
    if "detect" in args.what:
        model = create_model(args.model, keep_rate=0.7).eval()
        clips = make_clips(args.batch, model.backbone.num_frames, args.img_size, torch.device("cpu"))

        def make_step():
            def step() -> None:
                with torch.inference_mode():
                    model(clips)

            return step

        report(
            f"{args.model} detector at {args.img_size}, batch {args.batch}, keep rate 0.7",
            by_road(make_step, args),
        )


if __name__ == "__main__":
    main()
