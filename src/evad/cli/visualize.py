"""`evad visualize tokens|attention`: pictures of one keyframe clip of a video (evad.viz).

``tokens`` draws the tokens kept after each pruning layer (EVAD Fig. 4); ``attention`` draws the
context decoder's attention from each detected actor to the video tokens (supplementary Fig. 4).
The clip is cut and resized exactly as `evad detect` cuts it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from evad.cli.arguments import device, keep_rate, positive, probability
from evad.cli.detect import add_model_arguments, chosen_person_threshold, load_model
from evad.cli.messages import warnings_as_lines
from evad.errors import UserError
from evad.fileio import check_output_file, make_dirs

if TYPE_CHECKING:
    from torch import Tensor

    from evad.inference import ClipAtTime, LoadedModel


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


def _common(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("video", metavar="VIDEO", help="video file PyAV can decode")
    add_model_arguments(parser)
    parser.add_argument("--keep-rate", type=keep_rate, help="token keep rate rho (default: the model's)")
    parser.add_argument(
        "--time", type=_seconds, help="keyframe time in seconds (default: the middle of the video)"
    )
    parser.add_argument(
        "--out", default=default_out, help=f"picture to write, .png or .jpg (default: {default_out})"
    )
    parser.add_argument(
        "--short-side", type=positive(int), help="input short side (default: the checkpoint's; 256)"
    )
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "visualize",
        help="draw kept tokens or decoder attention for one keyframe of a video",
        description="Pictures of the 16 x 4 clip around one keyframe of a video (cut and resized as "
        "`evad detect` does), one column per temporal slice of the token grid.",
    )
    kinds = parser.add_subparsers(dest="picture", metavar="PICTURE")
    kinds.required = True
    tokens = kinds.add_parser(
        "tokens",
        help="tokens kept after each pruning layer (EVAD Fig. 4)",
        description="Draw the tokens that keyframe-centric pruning keeps after each pruning layer; "
        "dropped tokens are greyed out.",
    )
    _common(tokens, "tokens.png")
    tokens.set_defaults(func=run_tokens)
    attention = kinds.add_parser(
        "attention",
        help="context decoder attention of each detected actor (supplementary Fig. 4)",
        description="Draw, for each detected actor, the attention of its actor token to the video "
        "tokens in one context decoder block (mean over heads; pruned tokens are 0) as a heat map.",
    )
    _common(attention, "attention.png")
    attention.add_argument(
        "--block", type=int, default=-1, help="decoder block, negative from the last (default -1)"
    )
    attention.add_argument(
        "--person-threshold",
        type=probability,
        help="default: the checkpoint's evaluation threshold (0.7 unless its training changed it)",
    )
    attention.add_argument(
        "--max-actors", type=positive(int), default=4, help="most confident actors drawn (default 4)"
    )
    attention.set_defaults(func=run_attention)


def _prepare(args: argparse.Namespace) -> tuple[LoadedModel, Tensor, ClipAtTime]:
    """Check the inputs, load the model and cut the clip: the model, the (3, T, H, W) clip, its origin."""
    from evad.engine.distributed import resolve_device
    from evad.inference import clips_to_batch, probe_video, read_keyframe_clip
    from evad.layers.token_pruning import check_keep_rate
    from evad.viz.tokens import IMAGE_SUFFIXES

    probe_video(args.video)
    out = Path(args.out)
    if out.suffix.lower() not in IMAGE_SUFFIXES and not out.is_dir():
        raise UserError(f"{out}: --out must end in {', '.join(IMAGE_SUFFIXES)}")
    check_output_file(out, args.overwrite, (args.video,), create_folders=True)
    if args.keep_rate is not None:
        try:
            check_keep_rate(args.keep_rate)
        except ValueError as err:
            raise UserError(f"--keep-rate: {err}") from None
    resolve_device(args.device, "--device")
    with warnings_as_lines():
        loaded = load_model(args)
        read = read_keyframe_clip(
            args.video, args.time, num_frames=loaded.model.backbone.num_frames, settings=loaded.inputs
        )
    inputs = loaded.inputs
    clip = clips_to_batch([read.clip], inputs.mean, inputs.std, device=args.device)[0]  # (3, T, H, W)
    loaded.model.eval().to(args.device)
    make_dirs(out.parent)
    return loaded, clip, read


def run_tokens(args: argparse.Namespace) -> int:
    from evad.viz.tokens import render_kept_tokens, trace_kept_tokens

    loaded, clip, read = _prepare(args)
    traced = trace_kept_tokens(loaded.model, clip, keep_rate=args.keep_rate)
    figure = render_kept_tokens(
        clip.cpu(), traced, args.out, loaded.inputs.mean, loaded.inputs.std, image_size=read.input_size
    )
    tokens = " -> ".join(str(n) for n in traced["num_tokens"])
    print(
        f"{args.video}: keyframe at {read.clip.time:.2f} s (frame {read.clip.keyframe}), tokens {tokens} "
        f"-> {args.out} ({figure.image.shape[1]} x {figure.image.shape[0]})"
    )
    return 0


def run_attention(args: argparse.Namespace) -> int:
    from evad.viz.attention import render_decoder_attention, trace_decoder_attention

    loaded, clip, read = _prepare(args)
    threshold = chosen_person_threshold(args, loaded)
    try:
        traced = trace_decoder_attention(
            loaded.model,
            clip,
            read.input_size,
            args.keep_rate,
            block=args.block,
            person_threshold=threshold,
            max_actors=args.max_actors,
        )
    except ValueError as err:  # a model without a context decoder, or no such --block
        raise UserError(str(err)) from None
    if not len(traced.maps):
        raise UserError(
            f"{args.video}: no actor at {read.clip.time:.2f} s has a person score >= "
            f"{threshold} (highest {traced.top_person_score:.2f}); lower --person-threshold"
        )
    figure = render_decoder_attention(
        clip.cpu(), traced, args.out, loaded.inputs.mean, loaded.inputs.std, class_names=loaded.class_names
    )
    shares = ", ".join(f"{float(s):.2f}" for s in traced.video_share)
    print(
        f"{args.video}: keyframe at {read.clip.time:.2f} s (frame {read.clip.keyframe}), "
        f"{len(traced.maps)} actor(s), decoder block {traced.block}, attention to video tokens {shares} "
        f"-> {args.out} ({figure.image.shape[1]} x {figure.image.shape[0]})"
    )
    return 0
