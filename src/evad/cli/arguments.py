"""argparse value types shared by the sub-commands (a bad value is argparse's one-line error)."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable


def device(text: str) -> str:
    """argparse type: "cpu", "cuda" or "cuda:N" (whether CUDA is there is checked later)."""
    if text in ("cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text}")


def probability(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def keep_rate(text: str) -> float:
    """argparse type: a token keep rate in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


SEED_LIMIT = 2**63  # torch.manual_seed takes a signed 64-bit integer


def seed(text: str) -> int:
    """argparse type: a random seed, a whole number in [0, 2**63)."""
    value = int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63), got {text}")
    return value


def positive(kind: type) -> Callable[[str], float]:
    """argparse type: a finite `kind` (int or float) above 0."""

    def parse(text: str) -> float:
        value = kind(text)
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value
