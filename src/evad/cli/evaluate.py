"""`evad evaluate ava|tubes|oracle`: score a detections file against ground truth."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from evad.cli import evaluate_ava, evaluate_oracle, evaluate_tubes

    parser = subparsers.add_parser(
        "evaluate", help="score a detections file with the official protocols (AVA, UCF101-24/JHMDB)"
    )
    kinds = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    kinds.required = True
    evaluate_ava.register(kinds)
    evaluate_tubes.register(kinds)
    evaluate_oracle.register(kinds)
