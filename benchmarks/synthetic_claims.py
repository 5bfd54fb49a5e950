"""The paper's claims at small scale, on the synthetic benchmark (issue 3, item 7).

Trains the demo's recipe (`configs/synthetic_tiny.yaml`) once per variant and prints one table:

* keep rate 0.7 vs 1.0: frame-mAP and GFLOPs (paper: equal mAP with about 40% fewer FLOPs);
* the context refinement decoder vs the linear head, both under pruning (paper Table 1a);
* a keyframe-only input (the keyframe repeated 16 times, `data.sampling_rate=0`) vs the 16x4 clip,
  on the motion classes, which one frame cannot decide.

Usage (about 9 minutes of 2 CPU cores per variant at the default recipe)::

    python benchmarks/synthetic_claims.py --data synth --out bench-claims [--markdown RESULTS.md]
    python benchmarks/synthetic_claims.py --data synth --out bench-claims train.epochs=32

`--data` is the demo's benchmark (`demo-output/data` after `make demo`, or `evad data synth --out synth
--videos 128 --seconds 5 --actor-height 0.5 0.85 --max-actors 4 --background-shapes 3 8`); the
recipe's 19 epochs are about 680 steps on it.
Each variant trains into OUT/<name>; a variant whose metrics exist already is not trained again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

VARIANTS = {
    "decoder_kr1.0": ["model.keep_rate=1.0"],
    "decoder_kr0.7": ["model.keep_rate=0.7"],
    "linear_kr0.7": ["model.keep_rate=0.7", "model.action_head=linear"],
    "decoder_kr0.7_keyframe_only": ["model.keep_rate=0.7", "data.sampling_rate=0"],
}


def motion_ap(report: dict) -> float:
    from evad.data.synthetic import SYNTH_CLASSES

    aps = [report["per_class"][str(c.id)] for c in SYNTH_CLASSES if c.kind == "motion"]
    return sum(aps) / len(aps)


def run_variant(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    from evad.config import load_config
    from evad.demo import packaged_config
    from evad.engine.train import train
    from evad.flops import count_flops
    from evad.models import build_model

    out = args.out / name
    metrics = out / "eval" / "metrics.json"
    config = load_config(
        packaged_config("synthetic_tiny.yaml"),
        [f"data.root={args.data}", f"output_dir={out}", *overrides, *args.overrides],
    )
    if metrics.is_file():
        print(f"{name}: reusing {metrics}")
        seconds = json.loads((out / "bench.json").read_text())["train_seconds"]
    else:
        print(f"{name}: training ({' '.join(overrides)})")
        start = time.perf_counter()
        train(config, overwrite=True, progress=not args.no_progress)
        seconds = time.perf_counter() - start
        (out / "bench.json").write_text(json.dumps({"train_seconds": seconds}))
    report = json.loads(metrics.read_text())
    model = build_model(config.model.model_config(num_classes=len(report["per_class"])))
    flops = count_flops(model, img_size=config.data.test_short_side)
    return {
        "variant": name,
        "mAP": report["mAP"],
        "motion_mAP": motion_ap(report),
        "gflops": flops.gflops,
        "train_minutes": seconds / 60,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a synthetic benchmark folder")
    parser.add_argument("--out", type=Path, default=Path("bench-claims"))
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="run these variants only")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="changes to every variant")
    args = parser.parse_args()
    rows = [run_variant(name, VARIANTS[name], args) for name in (args.only or VARIANTS)]
    lines = [
        "| variant | frame-mAP | motion-class mAP | GFLOPs (128x128 clip) | training minutes |",
        "|---|---|---|---|---|",
        *(
            f"| {r['variant']} | {100 * r['mAP']:.1f} | {100 * r['motion_mAP']:.1f} | {r['gflops']:.3f} "
            f"| {r['train_minutes']:.1f} |"
            for r in rows
        ),
    ]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        command = "python benchmarks/synthetic_claims.py " + " ".join(sys.argv[1:])
        args.markdown.write_text(f"{table}\n\nCommand: `{command}`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
