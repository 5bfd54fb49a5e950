"""The Markdown table that `evad bench` prints, laid out like EVAD Table 2.

Each row is one (input size, keep rate) result; speed-ups and memory changes compare it with the
row of keep rate 1.0 at the same input size, or the highest keep rate measured there.
"""

from __future__ import annotations

from collections.abc import Sequence

from evad.bench.sweep import BenchResult


def _reference(results: Sequence[BenchResult], img_size: int) -> BenchResult:
    """The row that speed-ups and savings compare to: keep rate 1.0, else the highest measured."""
    same = [r for r in results if r.img_size == img_size]
    return max(same, key=lambda r: r.keep_rate)


def format_table(results: Sequence[BenchResult]) -> str:
    """A Markdown table like EVAD Table 2: speed-up and memory change (-47% = 47% less) relative to
    keep rate 1.0, or the highest keep rate measured at that input size."""
    train = any(r.train_times for r in results)
    header = [
        "input",
        "keep rate",
        "GFLOPs",
        "clips/s",
        "speed-up",
        "latency ms (median / p90)",
        "peak mem MiB",
        "mem change",
    ]
    if train:
        header += ["train step ms", "train speed-up", "train mem MiB", "train mem change"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        ref = _reference(results, r.img_size)
        cells = [
            f"{r.img_size}",
            f"{r.keep_rate:g}",
            f"{r.gflops:.4g}",
            f"{r.clips_per_s:.2f}",
            f"{r.clips_per_s / ref.clips_per_s:.2f}x",
            f"{r.latency_ms:.1f} / {r.latency_p90_ms:.1f}",
            f"{r.peak_mem_mb:.1f}",
            _change(r.peak_mem_mb, ref.peak_mem_mb),
        ]
        if train:
            cells += [
                f"{r.train_step_ms:.1f}",
                f"{ref.train_step_ms / r.train_step_ms:.2f}x",
                f"{r.train_peak_mem_mb:.1f}",
                _change(r.train_peak_mem_mb, ref.train_peak_mem_mb),
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _change(value: float, reference: float) -> str:
    return f"{100 * (value / reference - 1):+.1f}%" if reference > 0 else "-"
