"""`evad demo`: synthetic benchmark -> CPU training -> frame-mAP -> detection -> report (see evad.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from evad.cli.arguments import seed
from evad.cli.data import add_world_arguments
from evad.demo import DemoSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train and evaluate the tiny detector on the built-in synthetic benchmark",
        description="Generate the synthetic benchmark, train the tiny EVAD preset on the CPU, score "
        "frame-mAP@0.5 on held-out videos, run detection on one of them and write OUT/report.json "
        "and a self-contained OUT/report.html.",
    )
    parser.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--videos", type=int, default=128, help="synthetic videos, a quarter held out (128)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each synthetic video (5)")
    # The demo's world is calmer than `evad data synth`'s default (evad.demo.DemoSettings).
    add_world_arguments(
        parser,
        actor_height=DemoSettings.actor_height,
        max_actors=DemoSettings.max_actors,
        background_shapes=DemoSettings.background_shapes,
        as_defaults=True,
    )
    parser.add_argument("--seed", type=seed, default=0, help="seed of the benchmark and the training (0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished demo in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="changes to the recipe, e.g. train.epochs=4"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evad.demo import run_demo

    settings = DemoSettings(
        out=Path(args.out),
        videos=args.videos,
        seconds=args.seconds,
        actor_height=tuple(args.actor_height),
        max_actors=args.max_actors,
        background_shapes=tuple(args.background_shapes),
        seed=args.seed,
        overrides=(f"train.seed={args.seed}", *args.overrides),
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    report = run_demo(settings)
    print()
    print(f"frame-mAP@0.5 on held-out videos: {report['frame_mAP']:.3f}")
    for kind, ap in report["group_mAP"].items():
        print(f"  {kind:12s} classes: {ap:.3f}")
    print(f"person AP@0.5 of the kept boxes: {report['person_AP']:.3f}")
    print(f"frame-mAP with class shares as action scores (learned nothing): {report['class_share_mAP']:.3f}")
    minutes, total = report["train_minutes"], report["total_minutes"]
    print(f"training: {minutes:.1f} min, {report['steps']} steps; whole demo {total:.1f} min")
    print(f"report: {settings.out / 'report.html'} (and report.json)")
    return 0
