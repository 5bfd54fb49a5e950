"""Exceptions that the command line turns into a one-line message instead of a traceback, and
warnings that point at the user's code."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input from the user (a file, an argument, a config value).

    The message should name the file or argument and the problem in one line; `evad` prints it and
    exits with status 2.

    Attributes:
        every_process: Whether every process of a torchrun job raises this error alike (a bad
            config, an output folder in use); the command line then prints it from rank 0 only.
    """

    every_process: bool = False

    def __str__(self) -> str:
        """The message; for an error that a DataLoader worker raised, the worker's message alone.

        PyTorch re-raises a worker's exception in the main process with the worker's whole
        traceback as the message ("Caught UserError in DataLoader worker process 0. Original
        Traceback ..."); its last line is the original ``evad.errors.UserError: <message>``.
        """
        text = super().__str__()
        if not (text.startswith(f"Caught {type(self).__name__} in DataLoader") and "Traceback" in text):
            return text
        last = text.rstrip().splitlines()[-1]
        name = f"{type(self).__module__}.{type(self).__qualname__}: "
        return last.removeprefix(name)


@contextmanager
def raised_alike_by_every_process() -> Iterator[None]:
    """Mark the UserErrors raised inside as `every_process` (code that reads only what every
    process reads the same: the config, the output folder, a checkpoint)."""
    try:
        yield
    except UserError as err:
        err.every_process = True
        raise


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def outside_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` call, in the function calling this one,
    report the first caller outside evad: the user's line, however deep inside evad the warning is
    raised (Python 3.12's ``skip_file_prefixes``, for 3.10 and 3.11)."""
    frame = sys._getframe(1)  # the function about to call warnings.warn: stacklevel 1
    level = 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level
