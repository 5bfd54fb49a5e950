"""Speed and memory of EVAD at several token keep rates, measured side by side (EVAD Table 2, Fig. 8).

`run_sweep` (`evad.bench.sweep`) measures GFLOPs, inference throughput, latency and peak memory,
and optionally a training step, at every (input size, keep rate); `format_table`
(`evad.bench.table`) prints them like Table 2. The parts:

- `evad.bench.measure`: timing and memory of one call, interleaved timing rounds, what the memory
  figures count;
- `evad.bench.steps`: the measured inference and training steps, their random clips and synthetic
  targets, autocast;
- `evad.bench.sweep`: `BenchResult` and the sweep;
- `evad.bench.table`: the Markdown table.
"""

from evad.bench.measure import (
    Step,
    describe_device,
    interleaved_times,
    peak_memory_mb,
    percentile,
    static_memory_mb,
    synchronize,
    time_call,
)
from evad.bench.steps import DTYPES, autocast, inference_step, make_clips, synthetic_targets, train_step
from evad.bench.sweep import BenchResult, run_sweep
from evad.bench.table import format_table

__all__ = [
    "DTYPES",
    "BenchResult",
    "Step",
    "autocast",
    "describe_device",
    "format_table",
    "inference_step",
    "interleaved_times",
    "make_clips",
    "peak_memory_mb",
    "percentile",
    "run_sweep",
    "static_memory_mb",
    "synchronize",
    "synthetic_targets",
    "time_call",
    "train_step",
]
