"""argparse value types shared by the sub-commands (a bad value is argparse's one-line error)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def probability(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def positive(kind: type) -> Callable[[str], float]:
    """argparse type: a `kind` (int or float) above 0."""

    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse
