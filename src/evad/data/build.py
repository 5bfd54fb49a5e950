"""Datasets and loaders from the `data:` section of a config (the only place that reads DataConfig).

Example (the synthetic benchmark of `evad data synth --out synth`)::

    cfg = DataConfig(root="synth", train_annotations="annotations/train.csv",
                     val_annotations="annotations/val.csv", labelmap="annotations/labelmap.pbtxt",
                     timestamp_start=0)
    train = build_dataset(cfg, "train")
    loader = build_loader(train, batch_size=8, train=True, num_workers=cfg.num_workers, seed=0)
    for epoch in range(epochs):
        set_epoch(loader, epoch)
        for batch in loader:
            outputs = model(batch.clips, image_sizes=batch.image_sizes)
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from evad.data.ava import AvaDataset
from evad.data.collate import collate
from evad.data.config import DataConfig
from evad.data.frames import FrameFolders, FrameSource, VideoFiles
from evad.data.transforms import ClipTransform
from evad.data.tubes import TubeDataset
from evad.errors import UserError

SPLITS = ("train", "val")


def _path(cfg: DataConfig, value: str | None, name: str) -> Path:
    if value is None:
        raise UserError(f"data.{name} is not set (needed for data.format {cfg.format!r})")
    return (Path(cfg.root) / value).absolute()  # an absolute `value` replaces the root


def build_transform(cfg: DataConfig, train: bool) -> ClipTransform:
    """Training: scale jitter over `train_short_side`, flips and colour jitter; test: `test_short_side`."""
    if train:
        return ClipTransform(
            cfg.train_short_side, cfg.max_long_side, cfg.flip_prob, cfg.mean, cfg.std, cfg.color_jitter
        )
    return ClipTransform((cfg.test_short_side,), cfg.max_long_side, 0.0, cfg.mean, cfg.std)


def build_frame_source(cfg: DataConfig) -> FrameSource:
    """Video files when `cfg.videos` is set, else JPEG frame folders."""
    if cfg.videos is not None:
        if cfg.format != "ava":  # tube frames are counted in the video's own numbering, not at data.fps
            raise UserError(
                f"data.videos is read for data.format ava only; {cfg.format} reads frame folders: set "
                "data.frames (and data.frame_template) and data.videos=null"
            )
        return VideoFiles(_path(cfg, cfg.videos, "videos"), cfg.video_template, cfg.fps)
    return FrameFolders(_path(cfg, cfg.frames, "frames"), cfg.frame_template)


def build_dataset(cfg: DataConfig, split: str) -> AvaDataset | TubeDataset:
    """The dataset of a split ("train" or "val"), with every input checked now.

    Raises:
        UserError: A missing or malformed annotation, label map, pickle, frame folder or video.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    train = split == "train"
    common = {
        "source": build_frame_source(cfg),
        "transform": build_transform(cfg, train),
        "split": split,
        "classes": cfg.classes,
        "num_frames": cfg.num_frames,
        "sampling_rate": cfg.sampling_rate,
    }
    dataset: AvaDataset | TubeDataset
    if cfg.format == "ava":
        exclusions = cfg.train_exclusions if train else cfg.val_exclusions
        dataset = AvaDataset(
            _path(cfg, cfg.train_annotations if train else cfg.val_annotations, f"{split}_annotations"),
            _path(cfg, cfg.labelmap, "labelmap"),
            exclusions=None if exclusions is None else _path(cfg, exclusions, f"{split}_exclusions"),
            eval_labelmap=cfg.eval_labelmap and _path(cfg, cfg.eval_labelmap, "eval_labelmap"),
            fps=cfg.fps,
            timestamp_start=cfg.timestamp_start,
            **common,
        )
    else:
        if cfg.format == "jhmdb" and not 1 <= cfg.split <= 3:
            raise UserError(f"data.split must be 1, 2 or 3 for JHMDB, got {cfg.split}")
        dataset = TubeDataset(
            _path(cfg, cfg.groundtruth, "groundtruth"),
            split_index=cfg.split - 1 if cfg.format == "jhmdb" else 0,
            stride=cfg.train_stride if train else cfg.val_stride,
            **common,
        )
    dataset.size_divisor = cfg.size_divisor
    return dataset


class ShardSampler(Sampler[int]):
    """Contiguous, non-overlapping shards of the dataset for evaluation on several processes.

    Unlike DistributedSampler it never repeats items to even out the shards, so no keyframe is
    scored twice; shards differ in length by at most one.
    """

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.indices = range(rank * size // world_size, (rank + 1) * size // world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    num_workers: int,
    seed: int = 0,
    distributed: bool | None = None,
    size_divisor: int | None = None,
) -> DataLoader:
    """A DataLoader yielding `Batch`es.

    Training shuffles with a permutation that depends only on (seed, epoch) (call `set_epoch`
    before each epoch) and drops the last incomplete batch; each process then takes its share.
    The random transforms in workers draw from torch's per-worker RNG, which the loader's seeded
    generator seeds, so a run is reproducible for a given seed and `num_workers` (with
    `num_workers=0` they use the global RNG: seed it with `torch.manual_seed`). Evaluation keeps the
    dataset order and gives each process a contiguous shard.

    Args:
        dataset: A dataset from `build_dataset`.
        batch_size: Clips per batch and process.
        train: Shuffle, drop the last batch, random transforms.
        num_workers: Loader worker processes.
        seed: Shuffling and augmentation seed.
        distributed: Shard over the processes of torch.distributed; None does so when it is
            initialised.
        size_divisor: Padding multiple; defaults to the dataset's `size_divisor` attribute, else 32.
    """
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized()
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    divisor = size_divisor or getattr(dataset, "size_divisor", 32)
    generator = None
    if train:
        if len(dataset) // world_size < batch_size:
            raise UserError(
                f"the training set has {len(dataset)} keyframes, fewer than one batch of {batch_size} "
                f"for each of {world_size} processes"
            )
        # Also without torch.distributed: its permutation is a function of (seed, epoch), so a
        # resumed run sees the same order as an uninterrupted one.
        sampler: Sampler[int] = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        generator = torch.Generator().manual_seed(_worker_seed(seed, rank, 0))
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, size_divisor=divisor),
        pin_memory=torch.cuda.is_available(),
        drop_last=train,
        generator=generator,
    )


def _worker_seed(seed: int, rank: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, np.uint64)[0] >> 1)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Start epoch `epoch` of a training loader: its shuffle order and worker RNG seeds.

    Does nothing for evaluation loaders.
    """
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
        if loader.generator is not None:
            loader.generator.manual_seed(_worker_seed(sampler.seed, sampler.rank, epoch))


__all__ = [
    "ShardSampler",
    "build_dataset",
    "build_frame_source",
    "build_loader",
    "build_transform",
    "set_epoch",
]
