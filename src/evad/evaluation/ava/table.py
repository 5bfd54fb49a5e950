"""The in-memory form of an AVA CSV (`AvaTable`), its keyframe keys and the scorer's input warning."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np

Key = tuple[str, str]


class AvaInputWarning(UserWarning):
    """Input the official scorer silently ignores (unknown classes, videos or keyframes)."""


@dataclass
class AvaTable:
    """Rows of an AVA CSV in file order; ground truth and detections share the layout.

    Attributes:
        source: File name (or a description) used in messages.
        keys: Distinct keyframes named by any row, 2-column rows included, in order of appearance.
        row_key: (R,) index into ``keys`` of each box row.
        boxes: (R, 4) normalised x1, y1, x2, y2.
        labels: (R,) action ids.
        scores: (R,) detection scores; 1.0 for 7-column rows. (For 8-column ground truth this is
            the person id, which the official reader also takes as the score; it only decides
            the order of the boxes.)
        lines: (R,) 1-based line numbers, or None for tables built in memory.
    """

    source: str
    keys: list[Key]
    row_key: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    lines: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.row_key)


def keyframe_key(video_id: str, second: object) -> Key:
    """The canonical key of a keyframe: the timestamp as a number printed with 6 decimals.

    Raises:
        ValueError: If ``second`` is not a finite number.
    """
    try:
        value = Decimal(second if isinstance(second, str) else str(second))
    except InvalidOperation:
        raise ValueError(f"timestamp {second!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"timestamp {second!r} is not a finite number")
    # Printed through float like the official key (Decimal's own rounding would differ).
    return video_id, f"{float(value):.6f}"
