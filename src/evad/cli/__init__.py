"""The `evad` command line: parses arguments and hands them to library functions, nothing else.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds a parser
whose ``func`` default is the handler. Handlers import heavy dependencies lazily so that
``evad --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
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


def process_rank() -> int:
    """This process's rank in a torchrun job (0 outside one): messages that every process would
    print alike come from rank 0 only."""
    return int(os.environ.get("RANK", "0"))


def _unrecognized(parser: argparse.ArgumentParser, argv: list[str], extra: list[str]) -> None:
    """Exit with the usage of the (sub-)command the arguments name and, for a misspelt option,
    the closest one it has: `evad detect v.mp4 --person-treshold 0.5` names --person-threshold."""
    import difflib

    command = parser
    for token in argv:  # descend through `evaluate ava`, `visualize tokens`, ...
        sub = next((a for a in command._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is not None and token in sub.choices:
            command = sub.choices[token]
    message = f"unrecognized arguments: {' '.join(extra)}"
    options = [o for action in command._actions for o in action.option_strings]
    for token in extra:
        close = difflib.get_close_matches(token.split("=")[0], options, n=1) if token.startswith("--") else []
        if close:
            message += f" (did you mean {close[0]}?)"
            break
    command.error(message)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM (what torchrun, SLURM, Kubernetes and `kill` send) stops a command as Ctrl-C does, so
    # that its temporary files are removed and an evaluation under way in training saves its epoch.
    main_thread = threading.current_thread() is threading.main_thread()  # where handlers can be set
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also while the parser is built, before any command runs
        return _interrupted()
    except RuntimeError as err:
        # SIGTERM to a whole job (SLURM, `kill -TERM -PGID`) also ends its DataLoader workers, and
        # PyTorch's SIGCHLD handler raises "worker is killed by signal" while the interruption unwinds.
        if not _raised_while_interrupted(err):
            raise
        return _interrupted()
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _interrupted() -> int:
    if process_rank() == 0:  # Ctrl-C reaches every process of a torchrun job
        sys.stderr.write("evad: interrupted\n")
    return 130


def _raised_while_interrupted(err: BaseException) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__context__
    return False


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may sit between options (`train --config X a=1 --resume auto b=2`);
    # argparse only collects the first run of them.
    if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        _unrecognized(parser, list(argv if argv is not None else sys.argv[1:]), extra)
    try:
        result = args.func(args)
    except UserError as err:
        if not (err.every_process and process_rank() != 0):
            sys.stderr.write(f"evad: error: {err}\n")  # one write: other processes' lines stay whole
        return 2
    except BrokenPipeError:
        # The reader of the output went away (`evad ... | head`): stop quietly, as Unix tools do,
        # and let nothing else write into the closed pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    except (RuntimeError, MemoryError) as err:
        message = out_of_memory_message(err)
        if message is None:
            raise
        sys.stderr.write(f"evad: error: {message}\n")
        return 1
    return int(result or 0)


def out_of_memory_message(err: BaseException) -> str | None:
    """One line for a failed allocation (CUDA's `torch.OutOfMemoryError`, the CPU allocator's
    RuntimeError or NumPy's MemoryError), None for any other error: a resource limit, not a bug,
    needs no traceback."""
    text = str(err)
    cpu = "DefaultCPUAllocator: can't allocate memory" in text or isinstance(err, MemoryError)
    if not cpu and type(err).__name__ != "OutOfMemoryError":
        return None
    size = re.search(r"allocate (\d+) bytes", text)  # CPU: "tried to allocate 4000000000000 bytes"
    if size is not None:
        amount = f"{int(size.group(1)) / 2**30:.1f} GiB"
    else:
        # CUDA: "Tried to allocate 2.00 GiB"; NumPy: "Unable to allocate 169. GiB for an array ..."
        size = re.search(r"allocate ([\d.]+ [KMGTP]iB)", text)
        amount = size.group(1).replace(". ", " ") if size else "more memory"  # NumPy's "169. GiB"
    device = "CPU" if cpu else "GPU"
    return (
        f"out of {device} memory: one allocation needed {amount}; "
        "use a smaller batch size, input size or clip length"
    )


if __name__ == "__main__":
    sys.exit(main())
