"""Datasets (AVA format, UCF101-24 / JHMDB), clip transforms and batching (SPEC sections 1 and 9).

Quick start (after `evad data synth --out synth`)::

    from evad.data import DataConfig, build_dataset, build_loader
    cfg = DataConfig(root="synth", train_annotations="annotations/train.csv",
                     val_annotations="annotations/val.csv", labelmap="annotations/labelmap.pbtxt",
                     timestamp_start=0)
    loader = build_loader(build_dataset(cfg, "train"), 8, train=True, num_workers=2)
"""

from evad.data.ava import AvaDataset
from evad.data.build import (
    ShardSampler,
    build_dataset,
    build_frame_source,
    build_loader,
    build_transform,
    set_epoch,
)
from evad.data.collate import Batch, collate, padded_size
from evad.data.config import DataConfig
from evad.data.dataset import ClipDataset, KeyframeTargets
from evad.data.frames import FrameFolders, VideoFiles, clip_frame_numbers
from evad.data.transforms import ClipTransform, resized_size
from evad.data.tubes import TubeDataset

__all__ = [
    "AvaDataset",
    "Batch",
    "ClipDataset",
    "ClipTransform",
    "DataConfig",
    "FrameFolders",
    "KeyframeTargets",
    "ShardSampler",
    "TubeDataset",
    "VideoFiles",
    "build_dataset",
    "build_frame_source",
    "build_loader",
    "build_transform",
    "clip_frame_numbers",
    "collate",
    "padded_size",
    "resized_size",
    "set_epoch",
]
