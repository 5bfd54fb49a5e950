"""Speed and memory of EVAD at several token keep rates, measured side by side (EVAD Table 2, Fig. 8).

For every (input size, keep rate) the sweep reports GFLOPs (batch 1, `evad.flops`), inference
throughput and latency per batch, the peak memory of one batch, and optionally the time and peak
memory of a full training step (forward, set-prediction losses on synthetic targets, backward,
AdamW step). Keep rates are timed in interleaved rounds after all of them are warmed up, in a
rotated order each round, so that a drift of CPU frequency or a noisy neighbour spreads over all
rates instead of favouring the ones measured first.

Memory is the peak of live tensor bytes above the level just before the measured call, i.e. the
activations, gradients and temporaries that the call itself needs, excluding weights and optimizer
state (`static_memory_mb` gives those):

- CUDA: ``torch.cuda.max_memory_allocated`` after a reset, minus ``memory_allocated`` before.
- CPU: every allocation and free of PyTorch's CPU allocator during the call, recorded in order by
  ``torch.profiler`` (``profile_memory=True``) on a separate, untimed call; the peak of their running
  sum. This counts the same thing as the CUDA figure. It leaves out memory that libraries allocate
  outside PyTorch's allocator (oneDNN/BLAS scratch buffers, Python objects), and unlike process RSS it
  is not hidden by memory that malloc keeps after an earlier iteration freed it.

Example (roughly 15 minutes on a quiet 2-core CPU, a forward pass of batch 8 taking 15-30 s):

    evad bench --model vit-b --img-size 224 --keep-rate 1.0 0.9 0.8 0.7 0.6 --batch 8 --iters 5
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from evad.flops import count_flops

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

_MB = 2**20

Step = Callable[[], Any]
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
        peak_mem_mb: Peak extra memory of one inference call (MiB, see the module docstring).
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


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of `values`, linearly interpolated between order statistics."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def make_clips(batch: int, num_frames: int, img_size: int, device: torch.device, seed: int = 0) -> Tensor:
    """Random normalised clips (batch, 3, num_frames, img_size, img_size)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, num_frames, img_size, img_size, generator=generator).to(device)


def synthetic_targets(
    batch: int, img_size: int, num_classes: int, device: torch.device, max_boxes: int = 3, seed: int = 0
) -> list[dict[str, Tensor]]:
    """One to `max_boxes` random person boxes per clip, each with one to three action labels.

    Boxes are xyxy pixels inside the image, at least a tenth of its side wide and high; labels are
    multi-hot rows of `num_classes`, the format `SetCriterion` expects.
    """
    generator = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(batch):
        m = int(torch.randint(1, max_boxes + 1, (), generator=generator))
        size = img_size * (0.1 + 0.4 * torch.rand(m, 2, generator=generator))  # (m, 2) width, height
        corner = (img_size - size) * torch.rand(m, 2, generator=generator)  # (m, 2) x1, y1
        labels = torch.zeros(m, num_classes)
        for row in labels:
            count = min(num_classes, int(torch.randint(1, 4, (), generator=generator)))
            row[torch.randperm(num_classes, generator=generator)[:count]] = 1.0
        boxes = torch.cat([corner, corner + size], dim=1)  # (m, 4) xyxy
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return targets


def autocast(device: torch.device, dtype: str) -> Any:
    """torch.autocast to bf16 / fp16 on `device` (CUDA or CPU); a no-op for fp32."""
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a wall-clock interval covers it; no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(step: Step, device: torch.device) -> float:
    """Wall-clock seconds of one call of `step`, including the device work it queues."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def peak_memory_mb(step: Step, device: torch.device) -> float:
    """Peak of tensor memory above the level before one call of `step`, in MiB (module docstring)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / _MB
    return _cpu_peak_allocated(step) / _MB


def _cpu_peak_allocated(step: Step) -> int:
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        step()
    finally:
        with _quiet_stderr():
            prof.stop()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        if event.device_type() == torch.autograd.DeviceType.CPU:
            live += event.nbytes()
            peak = max(peak, live)
    return peak


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: Kineto writes two log lines to it at every profiler start
    and stop, whatever KINETO_LOG_LEVEL says."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def static_memory_mb(model: nn.Module, optimizer_states: int = 0) -> float:
    """MiB of parameters and buffers; for training, pass `optimizer_states` (AdamW: 2) to add those
    copies of the parameters and one more for their gradients."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    extra = (optimizer_states + 1) * params if optimizer_states else 0
    return (params + buffers + extra) / _MB


def describe_device(device: torch.device) -> str:
    """GPU name, or the CPU model and its logical core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name} ({os.cpu_count()} logical cores)"


def interleaved_times(
    steps: Mapping[Hashable, Step], warmup: int, iters: int, device: torch.device, tick: Callable[[], Any]
) -> dict[Hashable, list[float]]:
    """Warm every step up, then time `iters` rounds of one call of each step.

    The order rotates by one step each round so no step always runs first (or right after the
    slowest one). `tick` is called after every call (progress).
    """
    keys = list(steps)
    for key in keys:
        for _ in range(warmup):
            time_call(steps[key], device)
            tick()
    times: dict[Hashable, list[float]] = {key: [] for key in keys}
    for r in range(iters):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            times[key].append(time_call(steps[key], device))
            tick()
    return times


@contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[None]:
    was_training = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was_training)


def inference_step(
    model: nn.Module, clips: Tensor, keep_rate: float, device: torch.device, dtype: str
) -> Step:
    """One forward pass of `model` (detector or backbone) under inference mode and autocast."""

    def step() -> None:
        with torch.inference_mode(), autocast(device, dtype):
            model(clips, keep_rate=keep_rate)

    return step


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    clips: Tensor,
    targets: list[dict[str, Tensor]],
    keep_rate: float,
    device: torch.device,
    dtype: str,
    scaler: torch.amp.GradScaler | None = None,
) -> Step:
    """One training step as `evad.engine.epoch.train_one_epoch` takes it: forward under autocast,
    fp32 losses, backward, AdamW step. Gradients are released at the end so that the memory before
    the next step is weights + optimizer state only."""
    from evad.engine.predict import to_float32

    def step() -> None:
        with autocast(device, dtype):
            outputs = model(clips, keep_rate=keep_rate)
        total = criterion.weighted_total(criterion(to_float32(outputs), targets))
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


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
    """Measure `model` at every (img_size, keep_rate), keep rates interleaved (module docstring).

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

    per_key = 2 + warmup + iters
    bar = tqdm(
        total=len(keys) * per_key * (2 if criterion is not None else 1),
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
