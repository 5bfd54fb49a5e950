"""Writing the benchmark to disk in the AVA and UCF101-24 layouts (`generate`)."""

from __future__ import annotations

import glob
import json
import numbers
import os
import pickle
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from evad.data.synthetic.config import SYNTH_CLASSES, SynthConfig, SynthSummary
from evad.data.synthetic.render import render_frames
from evad.data.synthetic.scene import SynthVideo, simulate_video
from evad.errors import UserError
from evad.evaluation.ava.io import write_labelmap
from evad.fileio import folder_entries, link_target, make_dirs

# ----------------------------------------------------------------------------------------------
# Writing the dataset
# ----------------------------------------------------------------------------------------------

# Frame file layouts, numbered from 1; the AVA one is the primary copy, the others hard links.
LAYOUTS: dict[str, str] = {
    "ava": "frames/{video}/{video}_{frame:06d}.jpg",
    "mmaction2": "rawframes/{video}/img_{frame:05d}.jpg",
    "ucf24": "rgb-images/{video}/{frame:05d}.jpg",
}
ANNOTATIONS: dict[str, str] = {
    "train_csv": "annotations/train.csv",
    "val_csv": "annotations/val.csv",
    "labelmap": "annotations/labelmap.pbtxt",
    "train_exclusions": "annotations/train_excluded_timestamps.csv",
    "val_exclusions": "annotations/val_excluded_timestamps.csv",
    "ucf_gt": "annotations/synth-GT.pkl",
}


def generate(
    out_dir: str | os.PathLike,
    num_videos: int = 16,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    *,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthSummary:
    """Generate the synthetic benchmark into `out_dir` (byte-identical for the same arguments).

    Args:
        out_dir: output directory; must not exist, be empty, or (with `overwrite`) hold an earlier
            synthetic dataset.
        num_videos: number of videos (at least 2; the last `config.val_fraction` are validation).
        seed: random seed; video i depends only on (seed, i).
        size: frame height and width, overriding `config.size`.
        config: world and output settings.
        overwrite: replace an existing synthetic dataset in `out_dir`.
        progress: show a progress bar over videos.

    Returns:
        Counts of what was written.

    Raises:
        UserError: bad arguments, or an output directory that may not be written.
    """
    started = time.perf_counter()
    if config is not None and not isinstance(config, SynthConfig):
        raise UserError(f"config must be a SynthConfig, got {type(config).__name__}")
    cfg = config or SynthConfig()
    if size is not None:
        if isinstance(size, str) or len(size) != 2:  # "64" would be read as 6 x 4
            raise UserError(f"size must be (height, width), got {size!r}")
        cfg = replace(cfg, size=(int(size[0]), int(size[1])))
    check_settings(cfg, num_videos, seed)
    out = Path(out_dir)
    _check_output(out, overwrite)
    # A symbolic link (data/synth -> a folder on a bigger disk) stays; the folder it names is written.
    target = link_target(out)
    if Path.cwd().resolve().is_relative_to(os.path.realpath(out)):  # `--out .`: rmtree(".") failed
        raise UserError(
            f"{out}: is the current folder or holds it, and the dataset replaces --out whole; "
            "give a folder below it (--out synth)"
        )
    make_dirs(target.parent)
    # Build next to the target and rename at the end: an interrupted run leaves only a hidden
    # `.NAME.partial-*` folder, never something that looks like a finished dataset. A killed run's
    # folder (its process is gone) is removed here.
    _remove_dead_partials(target)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}-{time.time_ns()}"
    try:
        partial.mkdir()
    except OSError as err:
        raise UserError(f"{out}: cannot write in {target.parent}: {err.strerror or err}") from None
    try:
        summary = _write_dataset(partial, cfg, num_videos, seed, progress)
        if target.exists():
            shutil.rmtree(target)
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    summary.out_dir = out
    summary.seconds_taken = time.perf_counter() - started
    return summary


def _remove_dead_partials(out: Path) -> None:
    """Delete `.OUT.partial-PID-*` folders whose process no longer runs (it was killed mid-write)."""
    for folder in out.parent.glob(f".{glob.escape(out.name)}.partial-*"):
        pid = folder.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (PermissionError, OverflowError):
            pass  # another user's live process, or not a pid


def check_settings(cfg: SynthConfig, num_videos: int, seed: int = 0) -> None:
    """Raise UserError for settings `generate` refuses (`evad demo` checks before it replaces anything)."""
    for name, value in (("num_videos", num_videos), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise UserError(f"{name} must be a whole number >= 0, got {value!r}")
    height, width = cfg.size
    if num_videos < 2:
        raise UserError(
            f"num_videos (--videos) must be at least 2 (one to train on, one to validate on), "
            f"got {num_videos}"
        )
    if min(height, width) < 64:
        raise UserError(f"size (--size) must be at least 64 x 64 pixels, got {height} x {width}")
    if cfg.clip_frames < 2 or cfg.clip_stride < 1:
        raise UserError(
            f"clip_frames must be >= 2 and clip_stride >= 1, got {cfg.clip_frames}, {cfg.clip_stride}"
        )
    if not 0 < cfg.val_fraction < 1:
        raise UserError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
    low, high = cfg.extra_actors
    if not 0 <= low <= high:
        raise UserError(f"extra_actors must satisfy 0 <= MIN <= MAX, got {low} {high}")
    if cfg.fps < 1 or not cfg.keyframe_seconds():
        window = cfg.clip_frames * cfg.clip_stride
        raise UserError(
            f"videos of {cfg.seconds} s at {cfg.fps} fps are too short for one {window}-frame clip window"
        )
    if not 1 <= cfg.jpeg_quality <= 100:
        raise UserError(f"jpeg_quality must be in 1..100, got {cfg.jpeg_quality}")
    far, near = cfg.actor_height
    if not 0 < far <= near <= 1:
        raise UserError(f"actor_height (--actor-height) must satisfy 0 < FAR <= NEAR <= 1, got {far} {near}")
    if cfg.max_actors < 4:
        raise UserError(
            f"max_actors (--max-actors) must be at least 4 (the scheduled actors), got {cfg.max_actors}"
        )
    low, high = cfg.background_shapes
    if not 0 <= low < high:
        raise UserError(
            f"background_shapes (--background-shapes) must satisfy 0 <= MIN < MAX, got {low} {high}"
        )


def _check_output(out: Path, overwrite: bool) -> None:
    entries = folder_entries(out)
    if not entries:
        return
    if not overwrite:
        raise UserError(f"{out}: the folder is not empty; choose another or pass --overwrite")
    if not (out / "synth.json").is_file():
        raise UserError(f"{out}: the folder is not empty and holds no synth.json; refusing to replace it")
    # The whole folder is replaced: refuse if anything in it is not the generator's (a training run
    # written into the dataset folder, the user's notes).
    ours = {*(layout.split("/")[0] for layout in LAYOUTS.values()), "annotations", "synth.json"}
    foreign = sorted(entries - ours)
    if (out / "annotations").is_dir():
        written = {Path(name).name for name in ANNOTATIONS.values()}
        foreign += sorted(
            f"annotations/{p.name}" for p in (out / "annotations").iterdir() if p.name not in written
        )
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(
            f"{out}: holds files evad data synth did not write ({shown}); refusing to replace it: "
            "move them or choose another --out"
        )


def _write_dataset(root: Path, cfg: SynthConfig, num_videos: int, seed: int, progress: bool) -> SynthSummary:
    names = [f"synth_{i:04d}" for i in range(num_videos)]
    num_val = min(num_videos - 1, max(1, round(num_videos * cfg.val_fraction)))
    splits = {"train": names[: num_videos - num_val], "val": names[num_videos - num_val :]}
    rows: dict[str, list[str]] = {"train": [], "val": []}
    gttubes: dict[str, dict[int, list[np.ndarray]]] = {}
    link = _can_hard_link(root)
    # JPEG encoding and file writes release the GIL: they overlap with drawing the next frames.
    with ThreadPoolExecutor(max_workers=2) as writers:
        for index in tqdm(range(num_videos), desc="synth videos", unit="video", disable=not progress):
            video = simulate_video(cfg, seed, index)
            _write_frames(root, video, cfg.jpeg_quality, link, writers)
            rows["val" if video.name in splits["val"] else "train"].extend(_ava_rows(video, cfg))
            gttubes[video.name] = _tubes(video)
    (root / "annotations").mkdir()
    for split in ("train", "val"):
        (root / ANNOTATIONS[f"{split}_csv"]).write_text("".join(rows[split]))
        (root / ANNOTATIONS[f"{split}_exclusions"]).write_text("")
    write_labelmap(root / ANNOTATIONS["labelmap"], {c.id: c.name for c in SYNTH_CLASSES})
    ground_truth = {
        "labels": [c.name for c in SYNTH_CLASSES],
        "gttubes": gttubes,
        "nframes": dict.fromkeys(names, cfg.num_frames),
        "train_videos": [splits["train"]],
        "test_videos": [splits["val"]],
        "resolution": dict.fromkeys(names, tuple(cfg.size)),
    }
    (root / ANNOTATIONS["ucf_gt"]).write_bytes(pickle.dumps(ground_truth, protocol=4))

    all_rows = [row.split(",") for split in ("train", "val") for row in rows[split]]
    class_counts = {c.name: sum(int(r[6]) == c.id for r in all_rows) for c in SYNTH_CLASSES}
    summary = SynthSummary(
        out_dir=root,
        videos=num_videos,
        train_videos=len(splits["train"]),
        val_videos=len(splits["val"]),
        frames=num_videos * cfg.num_frames,
        keyframes=num_videos * len(cfg.keyframe_seconds()),
        boxes=len({tuple(r[:2] + r[7:]) for r in all_rows}),
        label_rows=len(all_rows),
        tubes=sum(len(tubes) for video in gttubes.values() for tubes in video.values()),
        class_counts=class_counts,
        seconds_taken=0.0,
    )
    meta = {
        "generator": "evad.data.synthetic",
        "seed": seed,
        "num_videos": num_videos,
        "config": asdict(cfg),
        "frames_per_video": cfg.num_frames,
        "keyframe_seconds": [s + cfg.timestamp_start for s in cfg.keyframe_seconds()],
        "frame_of_second": "frame file number = (second - timestamp_start) * fps + 1",
        "layouts": LAYOUTS,
        "annotations": ANNOTATIONS,
        "splits": splits,
        "classes": [asdict(c) for c in SYNTH_CLASSES],
        "counts": {k: v for k, v in asdict(summary).items() if k not in ("out_dir", "seconds_taken")},
    }
    (root / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return summary


def _can_hard_link(root: Path) -> bool:
    probe = root / ".link-probe"
    probe.write_bytes(b"")
    try:
        os.link(probe, root / ".link-probe-2")
    except OSError:
        return False
    else:
        (root / ".link-probe-2").unlink()
        return True
    finally:
        probe.unlink()


def _write_frames(
    root: Path, video: SynthVideo, quality: int, link: bool, writers: ThreadPoolExecutor
) -> None:
    """Write the AVA-layout JPEGs and hard-link (or copy) them into the other layouts."""
    for layout in LAYOUTS.values():
        (root / layout.format(video=video.name, frame=0)).parent.mkdir(parents=True)
    paths = [
        [root / layout.format(video=video.name, frame=n) for layout in LAYOUTS.values()]
        for n in range(1, len(video.camera) + 1)
    ]
    pending = [
        writers.submit(_save_frame, image, quality, frame_paths, link)
        for image, frame_paths in zip(render_frames(video), paths, strict=True)
    ]
    for job in pending:
        job.result()


def _save_frame(image: np.ndarray, quality: int, paths: list[Path], link: bool) -> None:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {paths[0]}")
    paths[0].write_bytes(data.tobytes())
    for path in paths[1:]:
        if link:
            os.link(paths[0], path)
        else:
            shutil.copyfile(paths[0], path)


def _visible(video: SynthVideo) -> np.ndarray:
    """(A, T) boxes at least one pixel wide and high inside the frame."""
    return ((video.boxes[..., 2] - video.boxes[..., 0]) >= 1) & (
        (video.boxes[..., 3] - video.boxes[..., 1]) >= 1
    )


def _ava_rows(video: SynthVideo, cfg: SynthConfig) -> list[str]:
    height, width = cfg.size
    visible = _visible(video)
    rows = []
    for second in cfg.keyframe_seconds():
        frame = second * cfg.fps
        for person in range(len(video.actors)):
            if not visible[person, frame]:
                continue
            x1, y1, x2, y2 = video.boxes[person, frame] / [width, height, width, height]
            for c in np.flatnonzero(video.labels[person, frame]):
                stamp = second + cfg.timestamp_start
                rows.append(f"{video.name},{stamp},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{c + 1},{person}\n")
    return rows


def _tubes(video: SynthVideo) -> dict[int, list[np.ndarray]]:
    """UCF-style tubes: one per actor and maximal run of frames holding a label."""
    visible = _visible(video)
    tubes: dict[int, list[np.ndarray]] = {}
    for c in range(len(SYNTH_CLASSES)):
        for person in range(len(video.actors)):
            mask = np.concatenate([[False], video.labels[person, :, c] & visible[person], [False]])
            edges = np.flatnonzero(np.diff(mask.astype(np.int8)))
            for start, stop in zip(edges[::2], edges[1::2], strict=True):
                frames = np.arange(start, stop)
                tube = np.concatenate([frames[:, None] + 1.0, np.round(video.boxes[person, frames], 2)], 1)
                tubes.setdefault(c, []).append(tube.astype(np.float32))
    return tubes
