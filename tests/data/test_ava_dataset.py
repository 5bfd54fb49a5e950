"""AVA-format dataset: multi-hot merging, class subsets, exclusions, clip sampling, input errors."""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from evad.data import AvaDataset, Batch, DataConfig, build_dataset, build_loader, set_epoch
from evad.data.synthetic import SynthConfig, generate
from evad.errors import UserError

HEIGHT, WIDTH = 64, 80


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 videos of 4 s at 30 fps: train synth_0000, synth_0001; val synth_0002; keyframes at 2 s, 3 s."""
    out = tmp_path_factory.mktemp("ava") / "synth"
    generate(out, num_videos=3, seed=0, size=(HEIGHT, WIDTH), config=SynthConfig(seconds=4), progress=False)
    return out


@pytest.fixture
def cfg(synth: Path) -> DataConfig:
    return DataConfig(
        root=str(synth),
        train_annotations="annotations/train.csv",
        val_annotations="annotations/val.csv",
        labelmap="annotations/labelmap.pbtxt",
        train_exclusions="annotations/train_excluded_timestamps.csv",
        timestamp_start=0,
        train_short_side=[HEIGHT],
        test_short_side=HEIGHT,
        flip_prob=0.0,
    )


def with_rows(cfg: DataConfig, tmp_path: Path, rows: list[str], **changes: object) -> DataConfig:
    """`cfg` reading `rows` as both the train and the val annotations."""
    path = tmp_path / "rows.csv"
    path.write_text("".join(row + "\n" for row in rows))
    return replace(cfg, train_annotations=str(path), val_annotations=str(path), **changes)


def targets(dataset: AvaDataset, index: int) -> tuple[np.ndarray, list[list[int]]]:
    """Boxes (normalised) and the class ids of each box of item `index`."""
    item = dataset[index]
    height, width = item["size"]
    boxes = item["boxes"].numpy() / [width, height, width, height]
    ids = [[dataset.class_ids[j] for j in np.flatnonzero(row)] for row in item["labels"].numpy()]
    return boxes, ids


def test_items_follow_the_csv(cfg: DataConfig, synth: Path) -> None:
    cfg = replace(cfg, test_short_side=96)
    dataset = build_dataset(cfg, "val")
    assert dataset.split == "val" and dataset.keyframes == [("synth_0002", 2), ("synth_0002", 3)]
    assert dataset.class_ids == list(range(1, 14)) and dataset.num_classes == 13
    assert dataset.class_names[0] == "stand"
    assert (
        dataset.groundtruth_csv == synth / "annotations" / "val.csv" and dataset.groundtruth_csv.is_absolute()
    )
    assert (
        dataset.labelmap_path == synth / "annotations" / "labelmap.pbtxt" and dataset.exclusions_csv is None
    )

    item = dataset[1]
    assert item["clip"].shape == (3, 16, 96, 120) and item["clip"].dtype == torch.float32
    assert item["video"] == "synth_0002" and item["timestamp"] == 3
    assert item["orig_size"] == (HEIGHT, WIDTH) and item["size"] == (96, 120)
    assert item["labels"].dtype == torch.float32 and item["boxes"].dtype == torch.float32

    expected: dict[tuple, set[int]] = {}  # box -> action ids at second 3
    with open(synth / "annotations" / "val.csv") as file:
        for _, second, *box, action, _person in csv.reader(file):
            if second == "3":
                expected.setdefault(tuple(map(float, box)), set()).add(int(action))
    boxes, ids = targets(dataset, 1)
    got = sorted((tuple(np.round(b, 3).tolist()), i) for b, i in zip(boxes, ids, strict=True))
    assert got == sorted((key, sorted(actions)) for key, actions in expected.items())


def test_rows_of_one_box_merge_into_a_multi_hot_label(cfg: DataConfig, tmp_path: Path) -> None:
    rows = [
        "synth_0000,2,0.1,0.2,0.5,0.6,1,0",
        "synth_0000,2,0.1,0.2,0.5,0.6,4,0",
        "synth_0000,2,0.1,0.2,0.5,0.6,7,1",  # same box, another person id: still the same box
        "synth_0000,2,0.1,0.2,0.5,0.7,2,1",  # another box
        "synth_0000,3,0.2,0.2,0.4,0.9,2",  # 7-column rows: no person id
        "synth_0000,3,0.2,0.2,0.4,0.9,3",
    ]
    dataset = build_dataset(with_rows(cfg, tmp_path, rows), "train")
    assert dataset.keyframes == [("synth_0000", 2), ("synth_0000", 3)]
    boxes, ids = targets(dataset, 0)
    np.testing.assert_allclose(boxes, [[0.1, 0.2, 0.5, 0.6], [0.1, 0.2, 0.5, 0.7]], atol=1e-6)
    assert ids == [[1, 4, 7], [2]]
    boxes, ids = targets(dataset, 1)
    assert len(boxes) == 1 and ids == [[2, 3]]


def test_class_subset(cfg: DataConfig, tmp_path: Path) -> None:
    rows = [
        "synth_0000,2,0.1,0.2,0.5,0.6,1,0",
        "synth_0000,2,0.1,0.2,0.5,0.6,4,0",
        "synth_0000,2,0.1,0.2,0.5,0.6,7,1",
        "synth_0000,3,0.2,0.2,0.4,0.9,2,0",
        "synth_0001,2",  # a keyframe without boxes
    ]
    cfg = with_rows(cfg, tmp_path, rows, classes=[4, 1])
    train = build_dataset(cfg, "train")
    assert train.class_ids == [1, 4] and train.class_names == ["stand", "walk"]
    assert train.keyframes == [("synth_0000", 2)]  # second 3 has no box of the kept classes
    item = train[0]
    assert item["labels"].tolist() == [[1.0, 1.0]] and item["boxes"].shape == (1, 4)
    val = build_dataset(cfg, "val")
    assert val.keyframes == [("synth_0000", 2), ("synth_0000", 3), ("synth_0001", 2)]  # all are scored
    assert val[1]["boxes"].shape == (0, 4) and val[1]["labels"].shape == (0, 2)


def test_excluded_keyframes_are_not_used(cfg: DataConfig, tmp_path: Path) -> None:
    (tmp_path / "excluded.csv").write_text("synth_0000,2\nsynth_0001,3\n")
    dataset = build_dataset(replace(cfg, train_exclusions=str(tmp_path / "excluded.csv")), "train")
    assert dataset.keyframes == [("synth_0000", 3), ("synth_0001", 2)]
    assert dataset.exclusions_csv == tmp_path / "excluded.csv"


def test_both_frame_layouts_give_identical_clips(cfg: DataConfig) -> None:
    ava = build_dataset(cfg, "val")
    mmaction = build_dataset(
        replace(cfg, frames="rawframes", frame_template="{video}/img_{frame:05d}.jpg"), "val"
    )
    for i in range(len(ava)):
        assert torch.equal(ava[i]["clip"], mmaction[i]["clip"])


def write_gray_frames(root: Path, video: str, count: int) -> None:
    """Frame n is solid gray 7 n, so a clip tells which files it read."""
    (root / video).mkdir(parents=True)
    for n in range(1, count + 1):
        cv2.imwrite(str(root / video / f"{video}_{n:06d}.jpg"), np.full((32, 40, 3), 7 * n, np.uint8))


def test_clip_sampling_clamps_at_both_ends(cfg: DataConfig, tmp_path: Path) -> None:
    write_gray_frames(tmp_path / "frames", "g", 32)
    rows = [f"g,{second},0.1,0.1,0.9,0.9,1,0" for second in (0, 1, 3)]
    cfg = with_rows(
        cfg, tmp_path, rows, frames=str(tmp_path / "frames"), fps=10.0, num_frames=4, sampling_rate=3,
        test_short_side=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
    )  # fmt: skip
    dataset = build_dataset(cfg, "val")
    read = [[round(float(f.mean()) * 255 / 7) for f in dataset[i]["clip"][0]] for i in range(3)]
    # Second s is frame 10 s + 1; offsets -6, -3, 0, +3; the folder ends at frame 32.
    assert read == [[1, 1, 1, 4], [5, 8, 11, 14], [25, 28, 31, 32]]
    assert dataset.clip_frame_numbers(2).tolist() == [25, 28, 31, 32]


def test_random_transforms_follow_the_seed(cfg: DataConfig) -> None:
    dataset = build_dataset(replace(cfg, train_short_side=[48, 64, 80], flip_prob=0.5), "train")
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append([(dataset[0]["size"], dataset[0]["boxes"][0, 0].item()) for _ in range(8)])
    assert draws[0] == draws[1] and draws[0] != draws[2]
    assert len(set(draws[0])) > 2


def test_loaders_pad_batches_and_shuffle_by_seed_and_epoch(cfg: DataConfig) -> None:
    train = build_dataset(replace(cfg, train_short_side=[48], size_divisor=32), "train")
    assert train.size_divisor == 32

    def order(loader: torch.utils.data.DataLoader, epoch: int) -> list[tuple[str, int]]:
        set_epoch(loader, epoch)
        batches = list(loader)
        assert all(isinstance(b, Batch) and len(b) == 2 for b in batches)
        assert all(
            b.clips.shape[-2:] == (64, 64) and b.image_sizes.tolist() == [[48, 60]] * 2 for b in batches
        )
        return [key for b in batches for key in zip(b.videos, b.timestamps, strict=True)]

    loader = build_loader(train, 2, train=True, num_workers=0, seed=0)
    epochs = [order(loader, epoch) for epoch in range(4)]
    assert sorted(epochs[0]) == sorted(train.keyframes)
    assert len(set(map(tuple, epochs))) > 1  # the order changes with the epoch...
    again = build_loader(train, 2, train=True, num_workers=0, seed=0)
    assert order(again, 3) == epochs[3]  # ...and is a function of (seed, epoch)
    assert len(build_loader(train, 3, train=True, num_workers=0)) == 1  # the last batch is dropped
    with pytest.raises(UserError, match="fewer than one batch"):
        build_loader(train, 8, train=True, num_workers=0)

    val = build_dataset(cfg, "val")
    batches = list(build_loader(val, 3, train=False, num_workers=0))
    assert [(v, t) for b in batches for v, t in zip(b.videos, b.timestamps, strict=True)] == val.keyframes


def test_worker_augmentations_follow_the_loader_seed(cfg: DataConfig) -> None:
    dataset = build_dataset(replace(cfg, train_short_side=[48, 64, 80], flip_prob=0.5), "train")

    def sizes(seed: int) -> list:
        loader = build_loader(dataset, 1, train=True, num_workers=1, seed=seed)
        set_epoch(loader, 0)
        return [
            (b.videos[0], b.timestamps[0], b.image_sizes.tolist(), b.targets[0]["boxes"].sum().item())
            for b in loader
        ]

    assert sizes(0) == sizes(0)


def error(cfg: DataConfig, split: str = "train") -> str:
    with pytest.raises(UserError) as info:
        build_dataset(cfg, split)
    return str(info.value)


def test_missing_files_are_named(cfg: DataConfig, synth: Path) -> None:
    assert re.search(
        f"cannot read {re.escape(str(synth / 'nope.csv'))}", error(replace(cfg, train_annotations="nope.csv"))
    )
    assert str(synth / "nope.pbtxt") in error(replace(cfg, labelmap="nope.pbtxt"))
    assert str(synth / "nope_ex.csv") in error(replace(cfg, train_exclusions="nope_ex.csv"))
    assert "data.labelmap is not set" in error(replace(cfg, labelmap=None))
    assert "data.val_annotations is not set" in error(replace(cfg, val_annotations=None), "val")
    assert "data.classes: ids [99]" in error(replace(cfg, classes=[1, 99]))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("synth_0000,2,0.1,0.2,0.5", "expected 2, 7 or 8 comma-separated columns, found 5 columns"),
        ("synth_0000,2,0.1,0.2,1.5,0.6,1,0", "box (0.1, 0.2, 1.5, 0.6) is outside [0, 1]"),
        ("synth_0000,2,0.1,-0.2,0.5,0.6,1,0", "is outside [0, 1]"),
        ("synth_0000,2,0.5,0.2,0.1,0.6,1,0", "box (0.5, 0.2, 0.1, 0.6) has x2 < x1 or y2 < y1"),
        ("synth_0000,2,0.1,0.2,0.5,0.6,99,0", "action id 99 is not in the label map"),
        ("synth_0000,2,0.1,0.2,0.5,x,1,0", "column 6 (y2) 'x' is not a number"),
        ("synth_0000,2.5,0.1,0.2,0.5,0.6,1,0", "keyframe (synth_0000, 2.5) is not at a whole second"),
    ],
)
def test_bad_rows_name_file_and_line(cfg: DataConfig, tmp_path: Path, row: str, message: str) -> None:
    cfg = with_rows(cfg, tmp_path, ["synth_0000,2,0.1,0.2,0.5,0.6,1,0", row])
    text = error(cfg)
    assert text.startswith(f"{tmp_path / 'rows.csv'}:2: ") and message in text


def test_empty_annotations_and_missing_frames_are_named(cfg: DataConfig, synth: Path, tmp_path: Path) -> None:
    assert error(with_rows(cfg, tmp_path, [])) == f"{tmp_path / 'rows.csv'}: the annotation file is empty"
    text = error(with_rows(cfg, tmp_path, ["nosuch,2,0.1,0.2,0.5,0.6,1,0"]))
    assert f"frame folder {synth / 'frames' / 'nosuch'} of video 'nosuch' does not exist" in text
    # 4-second videos: the keyframe of second 9 is frame 271 of 120.
    text = error(with_rows(cfg, tmp_path, ["synth_0000,9,0.1,0.2,0.5,0.6,1,0"]))
    assert text == f"missing frame file {synth / 'frames' / 'synth_0000' / 'synth_0000_000271.jpg'}"
    rows = ["synth_0000,7,0.1,0.2,0.5,0.6,1,0", "synth_0000,2,0.1,0.2,0.5,0.6,1,0"]
    text = error(with_rows(cfg, tmp_path, rows, timestamp_start=5))
    assert text.startswith(f"{tmp_path / 'rows.csv'}:2: keyframe (synth_0000, 2) lies before the first frame")


def test_processes_get_disjoint_shares(cfg: DataConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    import evad.data.build as build

    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    monkeypatch.setattr(build.dist, "get_world_size", lambda: 2)
    seen: dict[str, list] = {"train": [], "val": []}
    for rank in range(2):
        monkeypatch.setattr(build.dist, "get_rank", lambda rank=rank: rank)
        loader = build_loader(train, 1, train=True, num_workers=0, seed=3, distributed=True)
        set_epoch(loader, 1)
        seen["train"].append({(b.videos[0], b.timestamps[0]) for b in loader})
        loader = build_loader(val, 1, train=False, num_workers=0, distributed=True)
        seen["val"].append([(b.videos[0], b.timestamps[0]) for b in loader])
    assert len(seen["train"][0]) == len(seen["train"][1]) == 2
    assert seen["train"][0] | seen["train"][1] == set(train.keyframes)
    assert seen["val"] == [val.keyframes[:1], val.keyframes[1:]]


def test_sampling_rate_zero_repeats_the_keyframe(cfg: DataConfig) -> None:
    # The keyframe-only ablation: 16 copies of the keyframe, same shape as a real clip.
    data = build_dataset(replace(cfg, sampling_rate=0), "val")
    frames = data.clip_frame_numbers(0)
    assert len(frames) == cfg.num_frames
    assert set(frames.tolist()) == {frames[cfg.num_frames // 2]}
    clip = data[0]["clip"]
    assert torch.equal(clip, clip[:, :1].expand_as(clip))


def test_a_validation_set_with_nothing_to_score_is_named_before_training(
    cfg: DataConfig, tmp_path: Path
) -> None:
    """The evaluation would fail only after the first epoch; the data says so when it is built."""
    val_rows = tmp_path / "val.csv"
    val_rows.write_text("synth_0002,2,0.1,0.2,0.5,0.6,1,0\n")
    cfg = replace(cfg, val_annotations=str(val_rows), classes=[1, 4])
    assert build_dataset(cfg, "val").class_ids == [1, 4]
    assert build_dataset(replace(cfg, classes=[4]), "train").class_ids == [4]  # training has boxes of 4
    assert (
        error(replace(cfg, classes=[4]), "val")
        == f"{val_rows}: no boxes of the scored classes [4] outside the exclusions: nothing to score"
    )
    (tmp_path / "scored.pbtxt").write_text('item {\n  name: "run"\n  id: 5\n}\n')
    scored = replace(cfg, eval_labelmap=str(tmp_path / "scored.pbtxt"))
    assert (
        error(scored, "val")
        == f"{tmp_path / 'scored.pbtxt'}: names none of the trained classes [1, 4]: nothing to score"
    )
    assert str(tmp_path / "nope.pbtxt") in error(
        replace(cfg, eval_labelmap=str(tmp_path / "nope.pbtxt")), "val"
    )
