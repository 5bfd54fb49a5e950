"""The per-class AP chart of an AVA-protocol result (EVAD supplementary Fig. 1).

Example::

    >>> from evad.evaluation import evaluate_ava_files
    >>> result = evaluate_ava_files("val.csv", "detections.csv", "labelmap.pbtxt")  # doctest: +SKIP
    >>> plot_per_class_ap("per_class_ap.png", result)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from evad.evaluation.ava import AvaResult


def _result_dict(result: AvaResult | Mapping[str, Any]) -> Mapping[str, Any]:
    return result.to_dict() if isinstance(result, AvaResult) else result


def plot_per_class_ap(
    path: str | os.PathLike,
    result: AvaResult | Mapping[str, Any],
    compare: AvaResult | Mapping[str, Any] | None = None,
    labels: tuple[str, str] = ("result", "baseline"),
    title: str = "AVA per-class AP @ IoU 0.5",
) -> None:
    """Bar chart of per-class AP, like the EVAD supplementary's Fig. 1, written as PNG.

    With ``compare``, both results are drawn side by side and, as in the paper's figure, class
    names where ``result`` beats ``compare`` by more than 5 AP points are black, those where it
    more than doubles it green, the others grey. Needs matplotlib.

    Args:
        path: Output PNG.
        result: An :class:`AvaResult` or its :meth:`AvaResult.to_dict` form (e.g. a loaded JSON).
        compare: A second result, drawn as the baseline.
        labels: Legend names of ``result`` and ``compare``.
        title: The chart's title.
    """
    from matplotlib.figure import Figure  # lazily: an optional dependency

    first = _result_dict(result)
    second = _result_dict(compare) if compare is not None else None
    ids = sorted(int(k) for k in first["per_class"])
    names = [first.get("class_names", {}).get(str(k), str(k)) for k in ids]
    ap = np.array([first["per_class"][str(k)] for k in ids]) * 100
    x = np.arange(len(ids))
    figure = Figure(figsize=(max(8.0, 0.22 * len(ids) + 2), 5.5), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 if second is None else 0.4
    offset = 0 if second is None else width / 2
    axes.bar(x - offset, ap, width, label=f"{labels[0]} ({100 * first['mAP']:.1f} mAP)")
    colours = ["black"] * len(ids)
    if second is not None:
        other = np.array([second["per_class"].get(str(k), np.nan) for k in ids]) * 100
        label = f"{labels[1]} ({100 * second['mAP']:.1f} mAP)"
        axes.bar(x + offset, np.nan_to_num(other), width, label=label)
        colours = [
            "green" if ap[i] > 2 * other[i] else "black" if ap[i] - other[i] > 5 else "grey"
            for i in range(len(ids))
        ]
        axes.set_xlabel(
            f"class names: green = more than twice the AP of {labels[1]}, black = more than 5 points "
            "above it, grey = neither",
            fontsize=8,
        )
    axes.set_xticks(x, names, rotation=90, fontsize=8)
    for tick, colour in zip(axes.get_xticklabels(), colours, strict=True):
        tick.set_color(colour)
    axes.set_xlim(-0.6, len(ids) - 0.4)
    # AP is never negative; with every bar at 0 (an untrained model) matplotlib would centre the
    # axis on 0, so the top is at least 1%.
    axes.set_ylim(0, max(axes.get_ylim()[1], 1.0))
    axes.set_ylabel("AP (%)")
    axes.set_title(title)
    axes.legend(loc="upper right")
    figure.savefig(path, format="png", dpi=150)
