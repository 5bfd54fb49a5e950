"""`evad data synth`: write the synthetic benchmark (AVA and UCF101-24 formats) to a folder."""

from __future__ import annotations

import argparse

from evad.cli.arguments import seed

# The generator's defaults (`evad.data.synthetic.SynthConfig`; not imported, so `evad` starts quickly).
DEFAULT_WORLD = {"actor_height": (0.3, 0.55), "max_actors": 6, "background_shapes": (25, 45)}


def add_world_arguments(
    parser: argparse.ArgumentParser,
    actor_height: tuple[float, float],
    max_actors: int,
    background_shapes: tuple[int, int],
    as_defaults: bool,
) -> None:
    """--actor-height, --max-actors and --background-shapes, their help naming the given values.

    With `as_defaults` the values are also the options' defaults; otherwise an option left out is
    None, which leaves the generator's own default.
    """
    (far, near), (low, high) = actor_height, background_shapes
    parser.add_argument(
        "--actor-height",
        type=float,
        nargs=2,
        metavar=("FAR", "NEAR"),
        default=actor_height if as_defaults else None,
        help=f"standing height of the farthest and nearest actors, fractions of the frame ({far} {near})",
    )
    parser.add_argument(
        "--max-actors",
        type=int,
        default=max_actors if as_defaults else None,
        help=f"at most this many actors per video ({max_actors})",
    )
    parser.add_argument(
        "--background-shapes",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=background_shapes if as_defaults else None,
        help=f"clutter: random shapes painted on each background, MIN <= n < MAX ({low} {high})",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="prepare datasets (synthetic benchmark)")
    commands = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    commands.required = True
    synth = commands.add_parser(
        "synth",
        help="generate the synthetic action-detection benchmark",
        description="Generate articulated-figure videos with AVA-style keyframe labels and UCF-style "
        "tubes; the same seed and arguments give byte-identical files.",
    )
    synth.add_argument("--out", required=True, help="output directory (must be new or empty)")
    synth.add_argument("--videos", type=int, default=16, help="number of videos (default: 16)")
    synth.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    synth.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), default=None, help="frame size (default: 128 171)"
    )
    synth.add_argument("--seconds", type=int, default=None, help="video length in seconds (default: 8)")
    add_world_arguments(synth, **DEFAULT_WORLD, as_defaults=False)
    synth.add_argument(
        "--overwrite", action="store_true", help="replace an earlier synthetic dataset in --out"
    )
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    synth.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from evad.data.synthetic import ANNOTATIONS, SynthConfig, generate

    config = SynthConfig()
    changes = {
        "seconds": args.seconds,
        "actor_height": None if args.actor_height is None else tuple(args.actor_height),
        "max_actors": args.max_actors,
        "background_shapes": None if args.background_shapes is None else tuple(args.background_shapes),
    }
    config = replace(config, **{k: v for k, v in changes.items() if v is not None})
    summary = generate(
        args.out,
        num_videos=args.videos,
        seed=args.seed,
        size=args.size,
        config=config,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    out = summary.out_dir
    print(
        f"wrote {summary.videos} videos ({summary.train_videos} train, {summary.val_videos} val) to {out} "
        f"in {summary.seconds_taken:.1f} s"
    )
    print(
        f"  {summary.frames} frames, {summary.keyframes} keyframes, {summary.boxes} person boxes, "
        f"{summary.label_rows} labels, {summary.tubes} tubes, {len(summary.class_counts)} classes"
    )
    ava = ", ".join(str(out / ANNOTATIONS[key]) for key in ("train_csv", "val_csv", "labelmap"))
    print(f"  AVA:  {ava}")
    print(f"        frames in {out / 'frames'} and {out / 'rawframes'}")
    print(f"  UCF:  {out / ANNOTATIONS['ucf_gt']}, frames in {out / 'rgb-images'}")
    counts = ", ".join(f"{name} {count}" for name, count in summary.class_counts.items())
    print(f"  keyframe boxes per class: {counts}")
    return 0
