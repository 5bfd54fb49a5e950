"""The keep-rate sweep behind `evad bench`: speed and memory of EVAD side by side (EVAD Table 2, Fig. 8).

For every (input size, keep rate) the sweep reports GFLOPs (batch 1, `evad.flops`), inference
throughput and latency per batch, the peak memory of one batch, and optionally the time and peak
memory of a full training step (forward, set-prediction losses on synthetic targets, backward,
AdamW step). Keep rates are timed in interleaved rounds after all of them are warmed up
(`evad.bench.measure`, which also says what the memory figures count); the steps are those of
`evad.bench.steps`.

Example (roughly 15 minutes on a quiet 2-core CPU, a forward pass of batch 8 taking 15-30 s):

    evad bench --model vit-b --img-size 224 --keep-rate 1.0 0.9 0.8 0.7 0.6 --batch 8 --iters 5
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from evad.bench.measure import interleaved_times, peak_memory_mb, percentile
from evad.bench.steps import DTYPES, inference_step, make_clips, synthetic_targets, train_step
from evad.flops import count_flops

Key = tuple[int, float]  # (img_size, keep_rate)


@dataclass
class BenchResult:
    """Measurements of one (input size, keep rate) setting.

    Attributes:
        keep_rate: Token keep rate rho.
        img_size: Square input side in pixels.
        gflops: Multiply-adds of one batch-1 forward pass (the backbone's alone with backbone_only).
        tokens: Token count entering the encoder and after each pruning layer.
        batch: Clips per timed inference call.
        latencies: Seconds of each timed inference call.
        peak_mem_mb: Peak extra memory of one inference call (MiB, see `evad.bench.measure`).
        train_batch: Clips per training step, if training was measured.
        train_times: Seconds of each timed training step.
        train_peak_mem_mb: Peak extra memory of one training step (MiB).
    """

    keep_rate: float
    img_size: int
    gflops: float
    tokens: list[int]
    batch: int
    latencies: list[float] = field(default_factory=list)
    peak_mem_mb: float = math.nan
    train_batch: int | None = None
    train_times: list[float] | None = None
    train_peak_mem_mb: float | None = None

    @property
    def latency_ms(self) -> float:
        return 1e3 * statistics.median(self.latencies)

    @property
    def latency_p90_ms(self) -> float:
        return 1e3 * percentile(self.latencies, 90)

    @property
    def clips_per_s(self) -> float:
        """Clips per second at the median latency."""
        return self.batch / statistics.median(self.latencies)

    @property
    def train_step_ms(self) -> float | None:
        return None if not self.train_times else 1e3 * statistics.median(self.train_times)

    def as_dict(self) -> dict:
        """The JSON record: the keys documented in `evad bench --help`, None where not measured."""
        return {
            "keep_rate": self.keep_rate,
            "img_size": self.img_size,
            "gflops": round(self.gflops, 4),
            "tokens": self.tokens,
            "clips_per_s": round(self.clips_per_s, 3),
            "latency_ms": round(self.latency_ms, 2),
            "latency_p90_ms": round(self.latency_p90_ms, 2),
            "peak_mem_mb": round(self.peak_mem_mb, 1),
            "train_step_ms": None if self.train_step_ms is None else round(self.train_step_ms, 2),
            "train_peak_mem_mb": None if self.train_peak_mem_mb is None else round(self.train_peak_mem_mb, 1),
        }


@contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[None]:
    was_training = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was_training)


def run_sweep(
    model: nn.Module,
    img_sizes: Sequence[int],
    keep_rates: Sequence[float],
    *,
    batch: int = 8,
    device: torch.device | str = "cpu",
    dtype: str = "fp32",
    warmup: int = 2,
    iters: int = 10,
    backbone_only: bool = False,
    criterion: nn.Module | None = None,
    train_batch: int | None = None,
    compile: bool = False,
    progress: bool = True,
) -> list[BenchResult]:
    """Measure `model` at every (img_size, keep_rate), keep rates interleaved (`interleaved_times`).

    Args:
        model: An EVAD detector; it is moved to `device`, and its weights change if training is
            measured (AdamW steps at a learning rate of 1e-6).
        img_sizes: Square input sides, multiples of the patch size.
        keep_rates: Token keep rates in (0, 1].
        batch: Clips per inference call.
        device: Where to run.
        dtype: "fp32", or "bf16" / "fp16" autocast.
        warmup: Untimed calls of each setting before timing (with `compile`, these compile).
        iters: Timed calls of each setting.
        backbone_only: Time and count the backbone alone.
        criterion: Set criterion of the detector; given, training steps are measured too.
        train_batch: Clips per training step (default: `batch`).
        compile: Run through ``torch.compile(dynamic=False)``: one graph per input size, keep rate
            and mode, compiled during warm-up.
        progress: Show a tqdm bar.

    Returns:
        One result per (img_size, keep_rate), sizes outer, rates in the given order.
    """
    from tqdm import tqdm

    device = torch.device(device)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if criterion is not None and backbone_only:
        raise ValueError("training steps need the whole detector (the losses use its predictions)")
    model = model.to(device)
    target = model.backbone if backbone_only else model
    keys = [(size, float(rho)) for size in img_sizes for rho in keep_rates]
    runner = target
    if compile:
        # Every (size, rate, mode) is its own static graph; let dynamo keep them all.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * len(keys) + 8)
        runner = torch.compile(target, dynamic=False)

    # Calls per (size, rate): a FLOP count, the timed inference calls and a memory peak; with a
    # criterion also the timed training steps and their memory peak.
    per_key = 2 + warmup + iters + (warmup + iters + 1 if criterion is not None else 0)
    bar = tqdm(
        total=len(keys) * per_key,
        desc="bench",
        unit="call",
        disable=None if progress else True,
    )
    tick = bar.update
    try:
        results = {}
        bar.set_description("counting FLOPs")
        for size, rho in keys:
            report = count_flops(model, size, rho)
            gflops = report.backbone_gflops if backbone_only else report.gflops
            results[size, rho] = BenchResult(rho, size, gflops, report.tokens, batch)
            tick()

        frames = model.backbone.num_frames
        clips = {size: make_clips(batch, frames, size, device) for size in img_sizes}
        with _mode(model, False):
            steps = {(s, r): inference_step(runner, clips[s], r, device, dtype) for s, r in keys}
            bar.set_description("inference")
            for key, times in interleaved_times(steps, warmup, iters, device, tick).items():
                results[key].latencies = times
            bar.set_description("inference memory")
            for key, step in steps.items():
                results[key].peak_mem_mb = peak_memory_mb(step, device)
                tick()
        del clips

        if criterion is not None:
            _measure_training(
                model,
                runner,
                criterion,
                results,
                keys,
                train_batch or batch,
                device,
                dtype,
                warmup,
                iters,
                bar,
            )
    finally:
        bar.close()
    return [results[key] for key in keys]


def _measure_training(
    model: nn.Module,
    runner: nn.Module,
    criterion: nn.Module,
    results: dict[Key, BenchResult],
    keys: list[Key],
    batch: int,
    device: torch.device,
    dtype: str,
    warmup: int,
    iters: int,
    bar: Any,
) -> None:
    from evad.engine.optim import build_optimizer

    criterion = criterion.to(device)
    frames = model.backbone.num_frames
    num_classes = criterion.num_classes
    sizes = sorted({size for size, _ in keys})
    clips = {size: make_clips(batch, frames, size, device, seed=1) for size in sizes}
    targets = {size: synthetic_targets(batch, size, num_classes, device, seed=1) for size in sizes}
    optimizer = build_optimizer(model, base_lr=1e-6)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and dtype == "fp16" else None
    with _mode(model, True):
        steps = {
            (s, r): train_step(runner, criterion, optimizer, clips[s], targets[s], r, device, dtype, scaler)
            for s, r in keys
        }
        bar.set_description("training")
        for key, times in interleaved_times(steps, warmup, iters, device, bar.update).items():
            results[key].train_times = times
            results[key].train_batch = batch
        bar.set_description("training memory")
        for key, step in steps.items():
            results[key].train_peak_mem_mb = peak_memory_mb(step, device)
            bar.update()
