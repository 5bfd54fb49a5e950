"""UCF101-24 / JHMDB dataset: Python 2 pickles, keyframes per split, boxes per frame, input errors."""

from __future__ import annotations

import io
import pickle
import re
import struct
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from evad.data import DataConfig, TubeDataset, build_dataset
from evad.data.synthetic import SynthConfig, generate
from evad.errors import UserError

V1, V2, V3 = "Run/v_caf\xe9_01", "Jump/v_02", "Run/v_03"  # a latin-1 name, as Python 2 wrote it
NFRAMES = {V1: 12, V2: 10, V3: 12}
BOX_A, BOX_B, BOX_C, BOX_D = (4, 2, 20, 30), (10, 5, 30, 25), (0, 0, 40, 32), (8, 8, 16, 24)


def tube(first: int, last: int, box: tuple) -> np.ndarray:
    frames = np.arange(first, last + 1, dtype=np.float32)[:, None]
    return np.concatenate([frames, np.tile(np.asarray(box, np.float32), (len(frames), 1))], 1)


def groundtruth(**changes: object) -> dict:
    data = {
        "labels": ["Run", "Jump\xe9"],
        "gttubes": {
            V1: {0: [tube(3, 8, BOX_A)], 1: [tube(6, 10, BOX_B)]},
            V2: {1: [tube(1, 10, BOX_C)]},
            V3: {0: [tube(4, 6, BOX_D)]},
        },
        "nframes": dict(NFRAMES),
        "train_videos": [[V1, V2], [V2]],  # JHMDB-like: several splits
        "test_videos": [[V3], [V1]],
        "resolution": dict.fromkeys(NFRAMES, (32, 40)),
    }
    data.update(changes)
    return data


class Python2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: `str` as byte strings (SHORT_BINSTRING / BINSTRING)."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_str(self, text: str) -> None:
        data = text.encode("latin-1")
        self.write(
            (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<i", len(data))) + data
        )
        self.memoize(text)

    dispatch[str] = save_str


def write_pickle(path: Path, data: dict) -> Path:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(data)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frame folders rgb-images/<video>/%05d.jpg (frame n solid gray 7 n) and the pickle."""
    root = tmp_path_factory.mktemp("tubes")
    for video, count in NFRAMES.items():
        (root / "rgb-images" / video).mkdir(parents=True)
        for n in range(1, count + 1):
            cv2.imwrite(
                str(root / "rgb-images" / video / f"{n:05d}.jpg"), np.full((32, 40, 3), 7 * n, np.uint8)
            )
    write_pickle(root / "GT.pkl", groundtruth())
    return root


@pytest.fixture
def cfg(root: Path) -> DataConfig:
    return DataConfig(
        format="ucf24",
        root=str(root),
        groundtruth="GT.pkl",
        frames="rgb-images",
        frame_template="{video}/{frame:05d}.jpg",
        num_frames=4,
        sampling_rate=2,
        train_short_side=[64],
        test_short_side=64,
        flip_prob=0.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )


def test_python2_pickle_loads_and_every_annotated_frame_is_a_training_keyframe(
    cfg: DataConfig, root: Path
) -> None:
    assert (
        b"\x80\x02" in (root / "GT.pkl").read_bytes()[:2]
        and "caf\xe9".encode("latin-1") in (root / "GT.pkl").read_bytes()
    )
    dataset = build_dataset(cfg, "train")
    assert isinstance(dataset, TubeDataset) and dataset.split == "train"
    assert dataset.class_ids == [1, 2] and dataset.class_names == ["Run", "Jump\xe9"]
    assert dataset.keyframes == [(V1, n) for n in range(3, 11)] + [(V2, n) for n in range(1, 11)]
    assert dataset.groundtruth_path == root / "GT.pkl"
    assert dataset.groundtruth.videos == (V3,)  # the evaluation ground truth, whatever the split

    item = dataset[dataset.keyframes.index((V1, 7))]
    assert item["video"] == V1 and item["timestamp"] == 7
    assert item["orig_size"] == (32, 40) and item["size"] == (64, 80)
    np.testing.assert_allclose(item["boxes"].numpy(), np.array([BOX_A, BOX_B]) * 2)  # scaled by the resize
    assert item["labels"].tolist() == [[1, 0], [0, 1]]


def test_frames_are_numbered_from_one_and_clamped(cfg: DataConfig) -> None:
    dataset = build_dataset(cfg, "train")
    read = [
        [round(float(f.mean()) * 255 / 7) for f in dataset[dataset.keyframes.index(key)]["clip"][0]]
        for key in [(V1, 3), (V1, 10), (V2, 10)]
    ]
    assert read == [[1, 1, 3, 5], [6, 8, 10, 12], [6, 8, 10, 10]]


def test_train_stride(cfg: DataConfig) -> None:
    dataset = build_dataset(replace(cfg, train_stride=2), "train")
    assert dataset.keyframes == [(V1, n) for n in (3, 5, 7, 9)] + [(V2, n) for n in (1, 3, 5, 7, 9)]


def test_val_covers_every_frame_of_the_test_videos(cfg: DataConfig) -> None:
    dataset = build_dataset(cfg, "val")
    assert dataset.keyframes == [(V3, n) for n in range(1, 13)]
    assert [len(dataset[i]["boxes"]) for i in range(12)] == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert dataset[0]["labels"].shape == (0, 2)
    strided = build_dataset(replace(cfg, val_stride=5), "val")
    assert strided.keyframes == [(V3, 1), (V3, 6), (V3, 11)]


def test_jhmdb_split_selects_other_videos(cfg: DataConfig) -> None:
    jhmdb = replace(cfg, format="jhmdb", split=2)
    assert {video for video, _ in build_dataset(jhmdb, "train").keyframes} == {V2}
    val = build_dataset(jhmdb, "val")
    assert {video for video, _ in val.keyframes} == {V1} and val.groundtruth.videos == (V1,)
    assert {video for video, _ in build_dataset(replace(jhmdb, split=1), "train").keyframes} == {V1, V2}
    with pytest.raises(UserError, match="does not exist"):
        build_dataset(replace(jhmdb, split=3), "train")
    with pytest.raises(UserError, match=r"data\.split must be 1, 2 or 3"):
        build_dataset(replace(jhmdb, split=0), "train")


def test_class_subset(cfg: DataConfig) -> None:
    cfg = replace(cfg, classes=[2])
    train = build_dataset(cfg, "train")
    assert train.class_ids == [2] and train.class_names == ["Jump\xe9"]
    assert train.keyframes == [(V1, n) for n in range(6, 11)] + [(V2, n) for n in range(1, 11)]
    assert train[0]["labels"].tolist() == [[1.0]]
    val = build_dataset(cfg, "val")
    assert len(val) == 12 and all(len(val[i]["boxes"]) == 0 for i in (0, 4))


def test_synthetic_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    generate(out, num_videos=3, seed=0, size=(64, 80), config=SynthConfig(seconds=4), progress=False)
    cfg = DataConfig(
        format="ucf24", root=str(out), groundtruth="annotations/synth-GT.pkl", frames="rgb-images",
        frame_template="{video}/{frame:05d}.jpg", train_short_side=[96], test_short_side=96, flip_prob=0.0,
    )  # fmt: skip
    data = pickle.loads((out / "annotations" / "synth-GT.pkl").read_bytes())
    train = build_dataset(cfg, "train")
    for video in data["train_videos"][0]:
        annotated = {int(f) for tubes in data["gttubes"][video].values() for t in tubes for f in t[:, 0]}
        assert [n for v, n in train.keyframes if v == video] == sorted(annotated)
    video, frame = train.keyframes[len(train) // 2]
    # One tube per (person, action): a person's tubes share boxes and merge into one multi-hot row.
    expected: dict[tuple, set[int]] = {}
    for label, tubes in data["gttubes"][video].items():
        for row in (row for t in tubes for row in t if row[0] == frame):
            expected.setdefault(tuple(np.round(row[1:], 2).tolist()), set()).add(label + 1)
    assert any(len(labels) > 1 for labels in expected.values())  # the case being tested occurs
    item = train[len(train) // 2]
    boxes = item["boxes"].numpy() / 1.5  # the resize from 64 x 80 to 96 x 120
    got = {
        tuple(np.round(b, 2).tolist()): {train.class_ids[j] for j in np.flatnonzero(row)}
        for b, row in zip(boxes, item["labels"].numpy(), strict=True)
    }
    assert len(got) == len(boxes) == len(expected)
    assert got == expected
    val = build_dataset(cfg, "val")
    assert len(val) == sum(data["nframes"][v] for v in data["test_videos"][0])


def error(cfg: DataConfig, split: str = "train") -> str:
    with pytest.raises(UserError) as info:
        build_dataset(cfg, split)
    return str(info.value)


def test_bad_input_is_named(cfg: DataConfig, root: Path, tmp_path: Path) -> None:
    assert str(root / "nope.pkl") in error(replace(cfg, groundtruth="nope.pkl"))
    assert "data.groundtruth is not set" in error(replace(cfg, groundtruth=None))
    assert "data.classes: labels [3]" in error(replace(cfg, classes=[3]))

    no_train = write_pickle(
        tmp_path / "no_train.pkl", {k: v for k, v in groundtruth().items() if k != "train_videos"}
    )
    assert (
        error(replace(cfg, groundtruth=str(no_train)))
        == f"{no_train}: ground-truth pickle lacks train_videos"
    )

    for count in (-1, 0, 2.5, "12"):  # used to be blamed later on a frame file or a detections file
        broken = write_pickle(tmp_path / "count.pkl", groundtruth(nframes={**NFRAMES, V1: count}))
        assert error(replace(cfg, groundtruth=str(broken))).startswith(
            f"{broken}: training video {V1!r} has nframes {count!r}"
        )

    longer = write_pickle(tmp_path / "longer.pkl", groundtruth(nframes={**NFRAMES, V3: 15}))
    text = error(replace(cfg, groundtruth=str(longer)), "val")
    assert text == f"missing frame file {root / 'rgb-images' / V3 / '00013.jpg'}"

    # Video files are counted at data.fps, not in the pickle's own frame numbering.
    assert "data.videos is read for data.format ava only" in error(replace(cfg, videos="videos"))

    text = error(replace(cfg, frames=str(tmp_path / "elsewhere")))
    assert re.fullmatch(
        f"frame folder {re.escape(str(tmp_path / 'elsewhere' / V1))} of video .* does not exist", text
    )

    bad_tube = write_pickle(
        tmp_path / "bad.pkl", groundtruth(gttubes={**groundtruth()["gttubes"], V2: {1: [np.zeros((2, 4))]}})
    )
    assert str(bad_tube) in error(replace(cfg, groundtruth=str(bad_tube)))


def test_inverted_tube_boxes_are_named_before_training(cfg: DataConfig, tmp_path: Path) -> None:
    inverted = tube(1, 10, BOX_C)
    inverted[4, 1:5] = (30, 5, 10, 25)  # frame 5: x2 < x1
    path = write_pickle(
        tmp_path / "inverted.pkl", groundtruth(gttubes={**groundtruth()["gttubes"], V2: {1: [inverted]}})
    )
    assert error(replace(cfg, groundtruth=str(path))) == (
        f"{path}: video 'Jump/v_02', label 1, tube 0: frame 5 has box (30, 5, 10, 25) with x2 < x1 or y2 < y1"
    )


@pytest.mark.parametrize(
    "resolution",
    [(32, 40), (np.int64(32), np.int64(40)), np.array([32, 40])],
    ids=["ints", "numpy-ints", "array"],
)
def test_training_boxes_are_clipped_to_the_frame_and_frames_past_the_end_skipped(
    cfg: DataConfig, tmp_path: Path, resolution: object
) -> None:
    gttubes = {**groundtruth()["gttubes"], V2: {1: [tube(1, 12, (-6, 4, 50, 40))]}}  # 2 frames past 10
    sizes = dict.fromkeys(NFRAMES, resolution)
    path = write_pickle(tmp_path / "outside.pkl", groundtruth(gttubes=gttubes, resolution=sizes))
    with pytest.warns(UserWarning, match=r"2 annotated frames of training tubes lie outside"):
        train = build_dataset(replace(cfg, groundtruth=str(path)), "train")
    frames = [frame for video, frame in train.keyframes if video == V2]
    assert frames == list(range(1, 11))
    item = train[train.keyframes.index((V2, 1))]
    scale = item["size"][0] / 32  # the frames are 32 x 40
    np.testing.assert_allclose(item["boxes"].numpy(), [[0, 4 * scale, 40 * scale, 32 * scale]], atol=1e-4)


def test_flat_split_lists_and_non_dict_training_tubes_are_named(cfg: DataConfig, tmp_path: Path) -> None:
    # A list of names instead of a list of splits was read as split 1 = the first name's letters:
    # "training video 'R' has no nframes or gttubes entry".
    for key, lists in (("train_videos", [V1, V2]), ("test_videos", [V3, V1])):
        path = write_pickle(tmp_path / f"{key}.pkl", groundtruth(**{key: lists}))
        assert error(replace(cfg, groundtruth=str(path))).startswith(
            f"{path}: {key} must hold one list of video names per split"
        )
    # A training video's gttubes entry that is not a dict ended in AttributeError.
    path = write_pickle(tmp_path / "list.pkl", groundtruth(gttubes={**groundtruth()["gttubes"], V2: []}))
    assert error(replace(cfg, groundtruth=str(path))) == (
        f"{path}: malformed ground truth: gttubes of training video {V2!r} is a list, "
        "not a dict of label: tubes"
    )
