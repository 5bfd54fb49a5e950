"""Batching: zero padding to multiples of 32 at the bottom/right, unpadded sizes kept; samplers."""

from __future__ import annotations

import torch

from evad.data.build import ShardSampler
from evad.data.collate import Batch, collate, padded_size


def sample(height: int, width: int, num_boxes: int, video: str = "v", timestamp: int = 902) -> dict:
    return {
        "clip": torch.rand(3, 4, height, width) + 1.0,  # nonzero everywhere
        "boxes": torch.rand(num_boxes, 4),
        "labels": torch.ones(num_boxes, 5),
        "video": video,
        "timestamp": timestamp,
        "orig_size": (2 * height, 2 * width),
        "size": (height, width),
    }


def test_padding_to_multiples_of_32_keeps_unpadded_sizes() -> None:
    samples = [sample(48, 60, 2, "a", 902), sample(64, 80, 0, "b", 903)]
    batch = collate(samples)
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.clips.shape == (2, 3, 4, 64, 96)
    assert batch.image_sizes.tolist() == [[48, 60], [64, 80]] and batch.image_sizes.dtype == torch.int64
    assert batch.orig_sizes.tolist() == [[96, 120], [128, 160]]
    for clip, s, (h, w) in zip(batch.clips, samples, batch.image_sizes.tolist(), strict=True):
        torch.testing.assert_close(clip[:, :, :h, :w], s["clip"])
        assert not clip[:, :, h:].any() and not clip[:, :, :, w:].any()
    assert batch.videos == ["a", "b"] and batch.timestamps == [902, 903]
    assert batch.targets[0]["boxes"] is samples[0]["boxes"] and batch.targets[1]["labels"].shape == (0, 5)


def test_other_divisor_and_exact_multiples() -> None:
    assert collate([sample(64, 96, 1)]).clips.shape[-2:] == (64, 96)
    assert collate([sample(33, 20, 1)], size_divisor=16).clips.shape[-2:] == (48, 32)
    assert padded_size(256, 341) == (256, 352)


def test_to_moves_every_tensor() -> None:
    batch = collate([sample(32, 32, 1)]).to(torch.device("cpu"))
    assert batch.clips.device.type == "cpu" and batch.targets[0]["boxes"].device.type == "cpu"
    assert batch.image_sizes.device.type == batch.orig_sizes.device.type == "cpu"


def test_shard_sampler_covers_each_index_once() -> None:
    shards = [list(ShardSampler(10, rank, 3)) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    assert [len(s) for s in shards] == [3, 3, 4] and shards[0] == [0, 1, 2]
    assert [len(ShardSampler(2, rank, 3)) for rank in range(3)] == [0, 1, 1]
