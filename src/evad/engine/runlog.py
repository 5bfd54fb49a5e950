"""What a training run records: `log.jsonl` lines and TensorBoard scalars (rank 0 only), the
running loss means between log lines, and its progress messages (`log_info`, rank 0 only)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from evad.engine import distributed
from evad.fileio import write_atomically

logger = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a `log.jsonl`, skipping lines that are not a JSON object (a line cut short
    when a run was killed mid-write, or damaged by hand)."""
    records = []
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class RunLog:
    """JSON lines (and TensorBoard scalars when available), written by rank 0 only.

    Args:
        out_dir: Output directory.
        resume_step: When resuming, lines of steps after it (from the interrupted run) are dropped;
            None starts a new log.
        tensorboard: Also write TensorBoard scalars if `torch.utils.tensorboard` imports.
    """

    def __init__(self, out_dir: Path, resume_step: int | None, tensorboard: bool) -> None:
        self.enabled = distributed.is_main_process()
        self.path = out_dir / LOG_FILE
        self.writer = None
        if not self.enabled:
            return
        kept = []
        if resume_step is not None and self.path.exists():
            for record in read_log(self.path):
                step = record.get("step", 0)
                if isinstance(step, int) and step <= resume_step:
                    kept.append(record)
        text = "".join(json.dumps(record) + "\n" for record in kept)
        write_atomically(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed; logging to %s only", self.path)
            else:
                # TensorBoard hides events at steps >= purge_step; the checkpoint's own step stays,
                # as in the log.
                purge = None if resume_step is None else resume_step + 1
                self.writer = SummaryWriter(str(out_dir / TENSORBOARD_DIR), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
        if self.writer is not None:
            kind, step = record.get("type", "train"), record.get("step", 0)
            for key, value in record.items():
                if key not in ("type", "step", "epoch") and isinstance(value, int | float):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class LossWindow:
    """Running sums of loss terms (as device tensors, so no sync per step) between log lines."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new window (after a log line)."""
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.restart_clock()

    def restart_clock(self) -> None:
        """Count clips and time from now on, keeping the loss sums (a window carried into a new
        epoch: its throughput is not to include the evaluation between the epochs)."""
        self.clips = 0
        self.start = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], clips: int) -> None:
        for key, value in terms.items():
            value = value.detach().to(torch.float32, copy=True)  # not a view of the caller's tensor,
            self.sums[key] = self.sums[key] + value if key in self.sums else value  # reduced in place
        self.count += 1
        self.clips += clips

    def means(self) -> dict[str, float]:
        """Means over processes of the per-micro-batch means."""
        local = {k: v.item() / max(self.count, 1) for k, v in self.sums.items()}
        return distributed.all_reduce_mean(local)


def log_info(message: str) -> None:
    """Log `message` at INFO level on the main process only (the other processes would repeat it)."""
    if distributed.is_main_process():
        logger.info(message)
