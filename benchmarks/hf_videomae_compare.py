"""evad's ViT-B backbone at keep rate 1.0 against Hugging Face transformers' `VideoMAEModel`.

Both encode the same (B, 3, 16, 224, 224) clip with the same weights (random ones, copied from the
Hugging Face model into evad's layout by `evad.weights.videomae.hf_to_evad`), in one process with
the same thread count, timed in interleaved rounds after warm-up. Before timing, the script checks
that they compute the same function: evad's output tokens, put back in (t, h, w) order with their
indices, must match Hugging Face's `last_hidden_state`, and both must count the same GFLOPs (both
counted through PyTorch's math attention, so fused kernels are counted alike).

Hugging Face runs with `attn_implementation="sdpa"` (falls back to "eager" where unsupported; the
table says which). Each model takes its native layout: evad (B, 3, T, H, W), Hugging Face
(B, T, 3, H, W), both contiguous. transformers is a dev-only dependency, imported only here.

    .venv/bin/python benchmarks/hf_videomae_compare.py --batch 8 --iters 5 --json hf_compare.json

On a 2-core CPU at batch 8 each forward pass takes on the order of 10 s; the default run
(2 warm-up + 5 timed calls per model) takes about 3 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from evad.bench import describe_device, interleaved_times, make_clips, percentile
from evad.models.factory import build_backbone, get_config
from evad.weights.videomae import hf_to_evad


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per model")
    parser.add_argument("--iters", type=int, default=5, help="timed calls per model")
    parser.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"), help="Hugging Face attention")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return parser.parse_args()


def build_models(img_size: int, attn: str) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """evad's ViT-B backbone and a VideoMAEModel of the same shape and weights, and HF's attention."""
    from transformers import VideoMAEConfig, VideoMAEModel

    # Position table laid out for img_size: evad then adds exactly HF's table (no resize).
    cfg = get_config("vit-b", pretrain_img_size=img_size)
    hf_cfg = VideoMAEConfig(
        image_size=img_size,
        patch_size=cfg.patch_size,
        num_frames=cfg.num_frames,
        tubelet_size=cfg.tubelet_size,
        hidden_size=cfg.embed_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        intermediate_size=int(cfg.embed_dim * cfg.mlp_ratio),
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qv_bias=True,
        use_mean_pooling=False,  # keep the final LayerNorm, as evad's backbone has
    )
    try:
        hf = VideoMAEModel._from_config(hf_cfg, attn_implementation=attn)
    except (ValueError, ImportError):
        hf = VideoMAEModel._from_config(hf_cfg, attn_implementation="eager")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in hf.parameters():  # break the zero biases / unit norms of the default init
            p.add_(0.02 * torch.randn_like(p))
    ours = build_backbone(cfg)
    tensors = hf_to_evad(hf.state_dict(), "transformers VideoMAEModel").tensors
    ours.load_state_dict({k.removeprefix("backbone."): v for k, v in tensors.items()}, strict=True)
    return ours.eval(), hf.eval(), hf.config._attn_implementation


@torch.inference_mode()
def max_difference(ours: torch.nn.Module, hf: torch.nn.Module, clips: torch.Tensor) -> float:
    """Largest absolute difference between the two encoders' final tokens, in HF's (t, h, w) order."""
    out = ours(clips, keep_rate=1.0)
    B, M, C = out.tokens.shape
    ordered = torch.empty_like(out.tokens).scatter_(1, out.indices.unsqueeze(-1).expand(B, M, C), out.tokens)
    reference = hf(clips.transpose(1, 2).contiguous()).last_hidden_state  # (B, N, C), N = t*h*w
    return float((ordered - reference).abs().max())


@torch.inference_mode()
def gflops(fn, *args) -> float:
    """Multiply-adds (1e9) of `fn(*args)`, attention through the math kernel so that it is counted."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() / 2 / 1e9


def main() -> int:
    import transformers

    args = parse_args()
    if args.json is not None and args.json.exists() and not args.overwrite:
        print(f"{args.json} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ours, hf, attn = build_models(args.img_size, args.attn)
    ours, hf = ours.to(device), hf.to(device)
    frames = ours.num_frames

    one = make_clips(1, frames, args.img_size, device)
    diff = max_difference(ours, hf, one)
    flops = {
        "evad": gflops(lambda x: ours(x, keep_rate=1.0), one),
        "hf": gflops(hf, one.transpose(1, 2).contiguous()),
    }
    print(f"max |evad - hf| on the output tokens: {diff:.2e}; GFLOPs (batch 1): {flops}")
    if diff > 1e-3 or abs(flops["evad"] - flops["hf"]) > 1e-6 * flops["hf"]:
        print("warning: the two models do not compute the same function; timings are not comparable")

    clips = make_clips(args.batch, frames, args.img_size, device)
    hf_clips = clips.transpose(1, 2).contiguous()  # (B, 3, T, H, W) -> (B, T, 3, H, W)

    def run_ours() -> None:
        with torch.inference_mode():
            ours(clips, keep_rate=1.0)

    def run_hf() -> None:
        with torch.inference_mode():
            hf(hf_clips)

    steps = {"evad": run_ours, "hf": run_hf}
    done = [0]

    def tick() -> None:
        done[0] += 1
        print(f"\r{done[0]}/{len(steps) * (args.warmup + args.iters)} calls", end="", file=sys.stderr)

    times = interleaved_times(steps, args.warmup, args.iters, device, tick)
    print(file=sys.stderr)

    names = {"evad": "evad VideoViT (keep rate 1.0)", "hf": f"transformers VideoMAEModel ({attn})"}
    base = statistics.median(times["hf"])
    rows = []
    print(
        f"\nViT-B {frames}x{args.img_size}x{args.img_size}, batch {args.batch}, {describe_device(device)}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print("| model | GFLOPs | median ms | p90 ms | clips/s | time vs HF |")
    print("|---|---|---|---|---|---|")
    for key, values in times.items():
        median = statistics.median(values)
        row = {
            "model": names[key],
            "gflops": round(flops[key], 2),
            "latency_ms": round(1e3 * median, 1),
            "latency_p90_ms": round(1e3 * percentile(values, 90), 1),
            "clips_per_s": round(args.batch / median, 3),
            "times_ms": [round(1e3 * t, 1) for t in values],
        }
        rows.append(row)
        print(
            f"| {row['model']} | {row['gflops']:.1f} | {row['latency_ms']:.1f} | {row['latency_p90_ms']:.1f} "
            f"| {row['clips_per_s']:.2f} | {median / base:.2f}x |"
        )
    if args.json is not None:
        record = {
            "results": rows,
            "max_abs_diff": diff,
            "hf_attn_implementation": attn,
            "batch": args.batch,
            "img_size": args.img_size,
            "threads": torch.get_num_threads(),
            "device": describe_device(device),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]),
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
