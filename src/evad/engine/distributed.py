"""Multi-process training helpers: torchrun environment, rank queries and collectives.

Launch with ``torchrun --nproc_per_node N "$(which evad)" train ...`` (the `evad` console script is
a Python file torchrun can run); `init_from_env` reads RANK, WORLD_SIZE and LOCAL_RANK and starts
NCCL on CUDA, gloo on CPU. Without those variables every helper degrades to the
single-process answer, so the engine calls them unconditionally.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import distributed as dist

from evad.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str | None, setting: str = "train.device") -> torch.device:
    """The device `name` ("cpu", "cuda", "cuda:N"; "auto" or None: CUDA when available, else the
    CPU), or a one-line UserError naming `setting` when this machine does not have it."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{setting} {name}: no CUDA device is available")
        if device.index is not None and device.index >= count:
            raise UserError(f"{setting} {name}: this machine has {count} CUDA device(s), numbered from 0")
    return device


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's variables, or run as a single process.

    Args:
        device: "auto", "cpu" or "cuda"; with CUDA each process takes GPU LOCAL_RANK.

    Returns:
        This process's place; `initialized_here` says whether `cleanup` should end the group.
    """
    base = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(
            device=torch.device("cuda", torch.cuda.current_device()) if base.type == "cuda" else base
        )
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:  # torch.cuda.set_device would fail with "invalid device ordinal"
            raise UserError(
                f"this process has LOCAL_RANK {local_rank}, but this machine has {count} CUDA "
                f"device(s): start at most {count} processes per machine (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
        base = torch.device("cuda", local_rank)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if base.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        created = True
    return DistInfo(rank, world_size, local_rank, base, created)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_mean(values: Mapping[str, float], device: torch.device | None = None) -> dict[str, float]:
    """Average a dict of floats over processes (same keys on every process)."""
    if not is_dist() or not values:
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.tolist(), strict=True))


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's `obj` (picklable), in rank order; `[obj]` without a process group."""
    if not is_dist():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of process `src` on every process."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup(info: DistInfo) -> None:
    """End the process group if `init_from_env` started it."""
    if info.initialized_here and is_dist():
        dist.destroy_process_group()
