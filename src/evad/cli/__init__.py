"""The `evad` command line: parses arguments and hands them to library functions, nothing else.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds a parser
whose ``func`` default is the handler. Handlers import heavy dependencies lazily so that
``evad --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from evad.errors import UserError

# Modules providing `register(subparsers)`, in the order they appear in `evad --help`.
_COMMAND_MODULES = (
    "demo",
    "train",
    "eval",
    "detect",
    "visualize",
    "evaluate",
    "convert",
    "export",
    "flops",
    "bench",
    "data",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="evad", description="Efficient video action detection (EVAD) in PyTorch."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(f"evad.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may sit between options (`train --config X a=1 --resume auto b=2`);
    # argparse only collects the first run of them.
    if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        result = args.func(args)
    except UserError as err:
        print(f"evad: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evad: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of the output went away (`evad ... | head`): stop quietly, as Unix tools do,
        # and let nothing else write into the closed pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
