"""The synthetic benchmark: deterministic, both formats consistent, boxes tight, classes as designed."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from evad.cli import main
from evad.data.synthetic import (
    ANNOTATIONS,
    LAYOUTS,
    LIE,
    RUN,
    SIT,
    STAND,
    SYNTH_CLASSES,
    WALK,
    SynthConfig,
    generate,
    render_frames,
    simulate_video,
    writer,
)
from evad.errors import UserError

TINY = SynthConfig(size=(64, 80), seconds=4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default dataset: 16 videos of 8 s at 30 fps, 128 x 171."""
    out = tmp_path_factory.mktemp("synth") / "default"
    generate(out, progress=False)
    return out


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    generate(tmp_path / "a", 2, seed=3, config=TINY, progress=False)
    generate(tmp_path / "b", 2, seed=3, config=TINY, progress=False)
    generate(tmp_path / "c", 2, seed=4, config=TINY, progress=False)
    a, b, c = (_digests(tmp_path / name) for name in "abc")
    assert len(a) > 3 * 2 * 120 and a == b
    assert a.keys() == c.keys()
    assert a[ANNOTATIONS["train_csv"]] != c[ANNOTATIONS["train_csv"]]
    frames = [k for k in a if k.startswith("frames/")]
    assert sum(a[k] != c[k] for k in frames) == len(frames)


def test_layouts_hold_the_same_frames(dataset: Path) -> None:
    gt = pickle.loads((dataset / ANNOTATIONS["ucf_gt"]).read_bytes())
    meta = json.loads((dataset / "synth.json").read_text())
    assert meta["layouts"] == LAYOUTS
    for video, count in gt["nframes"].items():
        for layout in LAYOUTS.values():
            folder = (dataset / layout.format(video=video, frame=1)).parent
            assert len(list(folder.iterdir())) == count
            assert (dataset / layout.format(video=video, frame=count)).is_file()
        for frame in (1, count // 2, count):
            first, *others = (
                dataset / layout.format(video=video, frame=frame) for layout in LAYOUTS.values()
            )
            assert all(other.read_bytes() == first.read_bytes() for other in others)
    image = cv2.imread(str(dataset / LAYOUTS["ava"].format(video="synth_0000", frame=1)))
    assert image.shape == (*gt["resolution"]["synth_0000"], 3) == (128, 171, 3)


def test_csv_labelmap_and_pickle_agree(dataset: Path) -> None:
    labelmap = (dataset / ANNOTATIONS["labelmap"]).read_text()
    names = re.findall(r'name: "([^"]+)"', labelmap)
    ids = [int(i) for i in re.findall(r"\bid: (\d+)", labelmap)]
    assert ids == [c.id for c in SYNTH_CLASSES] and names == [c.name for c in SYNTH_CLASSES]
    gt = pickle.loads((dataset / ANNOTATIONS["ucf_gt"]).read_bytes())
    assert gt["labels"] == names
    meta = json.loads((dataset / "synth.json").read_text())
    fps, start = meta["config"]["fps"], meta["config"]["timestamp_start"]
    assert (dataset / ANNOTATIONS["val_exclusions"]).read_text() == ""

    # The tubes' boxes at keyframe frames, by (video, 1-based frame, label index).
    keyframes = {(s - start) * fps + 1 for s in meta["keyframe_seconds"]}
    tube_boxes: dict[tuple[str, int, int], list[np.ndarray]] = {}
    for video, tubes in gt["gttubes"].items():
        assert gt["nframes"][video] == meta["frames_per_video"]
        for label, tube_list in tubes.items():
            for tube in tube_list:
                assert tube.dtype == np.float32 and tube.shape[1] == 5
                assert (np.diff(tube[:, 0]) == 1).all() and 1 <= tube[0, 0] <= tube[-1, 0] <= gt["nframes"][
                    video
                ]
                for frame, *box in tube[np.isin(tube[:, 0], list(keyframes))]:
                    tube_boxes.setdefault((video, int(frame), label), []).append(np.array(box))

    # Every CSV row is a tube box at its keyframe (normalised there, pixels here), and vice versa.
    rows_by_key: dict[tuple[str, int, int], list[np.ndarray]] = {}
    for split, videos in (("train", gt["train_videos"][0]), ("val", gt["test_videos"][0])):
        rows = _read_csv(dataset / ANNOTATIONS[f"{split}_csv"])
        assert rows and all(len(row) == 8 for row in rows)
        assert {row[0] for row in rows} == set(videos) == set(meta["splits"][split])
        for video, second, *box, action, _ in rows:
            box = np.array(box, float)
            assert ((0 <= box) & (box <= 1)).all() and box[0] < box[2] and box[1] < box[3]
            assert int(second) in meta["keyframe_seconds"] and int(action) in ids
            height, width = gt["resolution"][video]
            key = (video, (int(second) - start) * fps + 1, int(action) - 1)
            rows_by_key.setdefault(key, []).append(box * [width, height, width, height])
    assert len(gt["train_videos"][0]) == 12 and len(gt["test_videos"][0]) == 4
    assert rows_by_key.keys() == tube_boxes.keys() and len(rows_by_key) > 300
    for key, boxes in rows_by_key.items():
        assert len(boxes) == len(tube_boxes[key])
        for box in boxes:
            assert min(np.abs(box - other).max() for other in tube_boxes[key]) <= 0.0005 * 171 + 0.01


def test_boxes_are_tight_around_the_drawn_figures() -> None:
    video = simulate_video(SynthConfig(seconds=4), seed=0, index=1)
    drawn = list(render_frames(video))
    empty = list(render_frames(video, figures=False))
    inside_diff, outside_diff, touching = [], [], []
    for i in range(0, 120, 10):
        diff = np.abs(drawn[i].astype(int) - empty[i].astype(int)).sum(-1)
        figure = diff > 40
        boxes = [
            (int(x1), int(y1), int(np.ceil(x2)), int(np.ceil(y2))) for x1, y1, x2, y2 in video.boxes[:, i]
        ]
        union = np.zeros_like(figure)
        for x1, y1, x2, y2 in boxes:
            union[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1] = True
        assert figure[~union].sum() <= 0.01 * figure.sum()  # figure pixels lie in the boxes
        for x1, y1, x2, y2 in boxes:
            ys, xs = np.nonzero(figure[y1:y2, x1:x2])
            if len(xs) > 20:  # not hidden by an occluder: the figure reaches each side of its box
                touching.append(
                    xs.min() <= 2 and ys.min() <= 2 and x2 - x1 - xs.max() <= 3 and y2 - y1 - ys.max() <= 3
                )
            ring = np.zeros_like(figure)
            ring[max(0, y1 - 4) : y2 + 5, max(0, x1 - 4) : x2 + 5] = True
            inside_diff.append(diff[y1:y2, x1:x2].mean())
            outside_diff.extend(diff[ring & ~union].tolist())
    assert np.mean(touching) > 0.9
    # The drawn figure changes the pixels inside its box, and (next to) nothing right outside it.
    assert np.mean(inside_diff) > 20 * max(np.mean(outside_diff), 1.0)
    assert (video.boxes[..., :2] >= 0).all() and (video.boxes[..., 2] <= 171).all()
    assert (video.boxes[..., 3] <= 128).all()


def test_disk_frames_are_the_rendered_frames(dataset: Path) -> None:
    video = simulate_video(SynthConfig(), seed=0, index=0)
    rendered = list(render_frames(video))
    quality = [cv2.IMWRITE_JPEG_QUALITY, SynthConfig().jpeg_quality]
    for frame in (1, 61, 240):
        on_disk = (dataset / LAYOUTS["ava"].format(video="synth_0000", frame=frame)).read_bytes()
        assert cv2.imencode(".jpg", rendered[frame - 1], quality)[1].tobytes() == on_disk


def test_every_class_appears_in_both_splits(dataset: Path) -> None:
    every = {c.id for c in SYNTH_CLASSES}
    assert len(every) >= 10
    for split in ("train", "val"):
        assert {int(row[6]) for row in _read_csv(dataset / ANNOTATIONS[f"{split}_csv"])} == every
    gt = pickle.loads((dataset / ANNOTATIONS["ucf_gt"]).read_bytes())
    assert {label for tubes in gt["gttubes"].values() for label in tubes} == {i - 1 for i in every}
    kinds = {c.kind for c in SYNTH_CLASSES}
    assert kinds == {"pose", "motion", "object", "interaction"}


def _effect_size(a: list[float], b: list[float]) -> float:
    pooled = np.sqrt((np.var(a) + np.var(b)) / 2)
    return abs(np.mean(a) - np.mean(b)) / pooled


def test_motion_is_invisible_in_one_frame_but_visible_over_the_clip() -> None:
    """Walk / run keyframe boxes look like stand boxes; sit and lie do not; the clip tells them apart."""
    config = SynthConfig()
    shape: dict[str, list[float]] = {}
    travel: dict[str, list[float]] = {}
    groups = {
        frozenset({STAND}): "stand",
        frozenset({STAND, WALK}): "walk",
        frozenset({STAND, RUN}): "run",
        frozenset({SIT}): "sit",
        frozenset({LIE}): "lie",
    }
    for index in range(24):
        video = simulate_video(config, seed=1, index=index)
        for second in config.keyframe_seconds():
            f = second * config.fps
            for person in range(len(video.actors)):
                group = groups.get(frozenset(np.flatnonzero(video.labels[person, f, : RUN + 1]).tolist()))
                if group is None:
                    continue
                x1, y1, x2, y2 = video.boxes[person, f]
                shape.setdefault(group, []).append((x2 - x1) / (y2 - y1))
                # Box centre at the first and last frame of the 16 x 4 clip around the keyframe.
                ends = video.boxes[person, [f - 32, f + 28]]
                moved = np.linalg.norm((ends[1, :2] + ends[1, 2:]) / 2 - (ends[0, :2] + ends[0, 2:]) / 2)
                travel.setdefault(group, []).append(moved / (y2 - y1))
    assert min(len(shape[g]) for g in ("stand", "walk", "run")) >= 30
    # One frame: the box shape of walkers and runners is like that of standers ...
    assert _effect_size(shape["walk"] + shape["run"], shape["stand"]) < 0.4
    # ... while the pose classes are plain to see in one frame.
    assert _effect_size(shape["sit"], shape["stand"]) > 1.2
    assert _effect_size(shape["lie"], shape["stand"]) > 3.0
    # Over the clip the walker moves and the runner moves further.
    assert np.median(travel["walk"]) > 4 * np.median(travel["stand"])
    assert np.median(travel["run"]) > 1.5 * np.median(travel["walk"])


def test_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"busy.*not empty"):
        generate(out, 2, config=TINY, progress=False)
    with pytest.raises(UserError, match=r"synth\.json"):
        generate(out, 2, config=TINY, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"
    # An earlier synthetic dataset may be replaced, and an empty folder used.
    generate(tmp_path / "old", 2, seed=1, config=TINY, progress=False)
    generate(tmp_path / "old", 2, seed=2, config=TINY, overwrite=True, progress=False)
    assert json.loads((tmp_path / "old" / "synth.json").read_text())["seed"] == 2
    (tmp_path / "empty").mkdir()
    generate(tmp_path / "empty", 2, config=TINY, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty", "old"]


def test_a_symbolic_link_to_a_folder_stays_and_the_folder_gets_the_dataset(tmp_path: Path) -> None:
    # data/synth -> a folder on a bigger disk: an empty one, an earlier dataset, one not made yet.
    # The dataset was written, then removing the old folder raised "Cannot call rmtree on a
    # symbolic link".
    for target in (tmp_path / "big", tmp_path / "later"):
        link = tmp_path / f"to-{target.name}"
        link.symlink_to(target, target_is_directory=True)
        if target.name == "big":
            target.mkdir()
        for seed in (1, 2):
            summary = generate(link, 2, seed=seed, config=TINY, overwrite=seed == 2, progress=False)
            assert summary.out_dir == link and link.is_symlink()
            assert json.loads((target / "synth.json").read_text())["seed"] == seed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_current_folder_is_refused_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    # `mkdir synth && cd synth && evad data synth --out .`: the dataset was generated, then
    # replacing "." deleted it again and failed with a traceback (rmtree of ".").
    empty = tmp_path / "synth"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["data", "synth", "--out", ".", "--videos", "2", "--no-progress"]) == 2
    assert "evad: error: .: is the current folder or holds it" in capsys.readouterr().err
    generate(tmp_path / "old", 2, seed=1, config=TINY, progress=False)
    monkeypatch.chdir(tmp_path / "old" / "annotations")
    with pytest.raises(UserError, match=r"old: is the current folder or holds it"):
        generate(tmp_path / "old", 2, seed=2, config=TINY, overwrite=True, progress=False)
    assert json.loads((tmp_path / "old" / "synth.json").read_text())["seed"] == 1
    assert list(empty.iterdir()) == []


def test_overwrite_keeps_a_dataset_folder_that_holds_other_files(tmp_path: Path) -> None:
    """--overwrite replaces the folder whole: it refuses when the user keeps anything else there."""
    out = tmp_path / "synth"
    generate(out, 2, seed=1, config=TINY, progress=False)
    (out / "runs").mkdir()
    (out / "runs" / "best.pt").write_text("a trained model")
    with pytest.raises(UserError, match=r"synth: holds files evad data synth did not write \(runs\)"):
        generate(out, 2, seed=2, config=TINY, overwrite=True, progress=False)
    (out / "runs" / "best.pt").unlink()
    (out / "runs").rmdir()
    (out / "annotations" / "my_split.csv").write_text("my rows")
    assert main(["data", "synth", "--out", str(out), "--videos", "2", "--overwrite", "--no-progress"]) == 2
    assert (out / "annotations" / "my_split.csv").read_text() == "my rows"
    assert json.loads((out / "synth.json").read_text())["seed"] == 1


def test_an_interrupted_run_leaves_nothing_that_looks_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def interrupted(*args: object, **kwargs: object) -> object:
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return simulate_video(*args, **kwargs)

    monkeypatch.setattr(writer, "simulate_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "out", 3, config=TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_runs_partial_folder_goes_on_the_next_run(tmp_path: Path) -> None:
    """SIGKILL leaves `.out.partial-PID-*` behind; the next run removes it if PID is gone."""
    dead = tmp_path / ".out.partial-999999999-1"  # above any Linux pid_max: no such process
    alive = tmp_path / f".out.partial-{os.getppid()}-1"  # a live process's (perhaps still writing)
    other = tmp_path / ".other.partial-999999999-1"  # another dataset's
    for folder in (dead, alive, other):
        (folder / "frames").mkdir(parents=True)
    generate(tmp_path / "out", 3, config=TINY, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", alive.name, other.name])


def test_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"num_videos \(--videos\) must be at least 2"):
        generate(tmp_path / "a", 1, config=TINY, progress=False)
    with pytest.raises(UserError, match=r"size \(--size\) must be at least 64 x 64"):
        generate(tmp_path / "a", 2, size=(32, 200), config=TINY, progress=False)
    with pytest.raises(UserError, match="too short"):
        generate(tmp_path / "a", 2, config=SynthConfig(seconds=2), progress=False)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_videos": "3"}, "num_videos must be a whole number >= 0, got '3'"),
        ({"num_videos": 2.5}, "num_videos must be a whole number >= 0, got 2.5"),
        ({"seed": -1}, "seed must be a whole number >= 0, got -1"),
        ({"size": (64,)}, r"size must be \(height, width\), got \(64,\)"),
        ({"size": "64"}, r"size must be \(height, width\), got '64'"),
        ({"config": {"seconds": 5}}, "config must be a SynthConfig, got dict"),
        ({"config": replace(TINY, val_fraction=0)}, r"val_fraction must be in \(0, 1\), got 0"),
        ({"config": replace(TINY, val_fraction=1.5)}, r"val_fraction must be in \(0, 1\), got 1.5"),
        (
            {"config": replace(TINY, extra_actors=(3, 1))},
            "extra_actors must satisfy 0 <= MIN <= MAX, got 3 1",
        ),
        ({"config": replace(TINY, extra_actors=(-2, 0))}, "extra_actors must satisfy"),
        ({"config": replace(TINY, clip_frames=0)}, "clip_frames must be >= 2 and clip_stride >= 1, got 0, 4"),
        (
            {"config": replace(TINY, clip_stride=0)},
            "clip_frames must be >= 2 and clip_stride >= 1, got 16, 0",
        ),
    ],
)
def test_bad_python_arguments_are_named(tmp_path: Path, arguments: dict, message: str) -> None:
    """They ended in numpy's or Python's errors (seed -1, (3, 1) extras, clip_frames 0, a dict) or
    were silently used (val_fraction 0 or 1.5, clip_stride 0, size '64' read as 6 x 4)."""
    arguments = {"num_videos": 2, "config": TINY, **arguments}
    with pytest.raises(UserError, match=message):
        generate(tmp_path / "a", progress=False, **arguments)
    assert not (tmp_path / "a").exists()


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    argv = ["data", "synth", "--out", str(out), "--videos", "3", "--seed", "5", "--size", "64", "96"]
    assert main([*argv, "--seconds", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "3 videos (2 train, 1 val)" in printed and "360 frames" in printed and str(out) in printed
    assert len(_read_csv(out / ANNOTATIONS["val_csv"])) > 0
    assert cv2.imread(str(out / LAYOUTS["mmaction2"].format(video="synth_0002", frame=120))).shape == (
        64,
        96,
        3,
    )
    assert main([*argv, "--seconds", "4", "--no-progress"]) == 2
    assert str(out) in capsys.readouterr().err


@pytest.mark.parametrize(("command", "seed"), [("data synth", "-1"), ("demo", "99999999999999999999")])
def test_a_seed_torch_and_numpy_cannot_take_is_refused(command, seed, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*command.split(), "--out", str(tmp_path / "out"), "--seed", seed])
    assert capsys.readouterr().err.endswith(f"error: argument --seed: must be in [0, 2**63), got {seed}\n")
    assert not (tmp_path / "out").exists()


def test_less_clutter_changes_pixels_not_annotations() -> None:
    from dataclasses import replace

    busy = simulate_video(TINY, seed=0, index=1)
    calm = simulate_video(replace(TINY, background_shapes=(2, 4)), seed=0, index=1)
    np.testing.assert_array_equal(busy.boxes, calm.boxes)
    np.testing.assert_array_equal(busy.labels, calm.labels)
    first = [next(iter(render_frames(video))) for video in (busy, calm)]
    assert not np.array_equal(*first)


def test_cli_world_options_reach_the_generator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "calm"
    world = ["--actor-height", "0.5", "0.85", "--max-actors", "4", "--background-shapes", "3", "8"]
    argv = ["data", "synth", "--out", str(out), "--videos", "2", "--seconds", "4", "--no-progress"]
    assert main([*argv, *world]) == 0
    config = json.loads((out / "synth.json").read_text())["config"]
    assert config["actor_height"] == [0.5, 0.85] and config["max_actors"] == 4
    assert config["background_shapes"] == [3, 8]
    capsys.readouterr()
    for bad, message in (
        (["--actor-height", "0.9", "0.5"], "actor_height (--actor-height) must satisfy"),
        (["--max-actors", "2"], "max_actors (--max-actors) must be at least 4"),
        (["--background-shapes", "5", "5"], "background_shapes (--background-shapes) must satisfy"),
    ):
        assert main([*argv[:3], str(tmp_path / "bad"), *argv[4:], *bad]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


@pytest.mark.skipif(
    not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no folder can be made"
)
def test_a_place_where_no_folder_can_be_made_is_one_line(capsys):
    assert main(["data", "synth", "--out", "/proc/evad-synth", "--videos", "2", "--seconds", "3"]) == 2
    assert "evad: error: /proc/evad-synth: cannot write in /proc" in capsys.readouterr().err
