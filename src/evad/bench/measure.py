"""Timing and memory of one call, the primitives behind `evad bench` (EVAD Table 2, Fig. 8).

Time is wall-clock seconds, with queued CUDA work waited for before and after the call. Steps of
several settings are timed in interleaved rounds after all of them are warmed up, in a rotated
order each round, so that a drift of CPU frequency or a noisy neighbour spreads over all settings
instead of favouring the ones measured first (`interleaved_times`).

Memory is the peak of live tensor bytes above the level just before the measured call, i.e. the
activations, gradients and temporaries that the call itself needs, excluding weights and optimizer
state (`static_memory_mb` gives those):

- CUDA: ``torch.cuda.max_memory_allocated`` after a reset, minus ``memory_allocated`` before.
- CPU: every allocation and free of PyTorch's CPU allocator during the call, recorded in order by
  ``torch.profiler`` (``profile_memory=True``) on a separate, untimed call; the peak of their running
  sum. This counts the same thing as the CUDA figure. It leaves out memory that libraries allocate
  outside PyTorch's allocator (oneDNN/BLAS scratch buffers, Python objects), and unlike process RSS it
  is not hidden by memory that malloc keeps after an earlier iteration freed it.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

_MB = 2**20

Step = Callable[[], Any]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of `values`, linearly interpolated between order statistics."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


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
