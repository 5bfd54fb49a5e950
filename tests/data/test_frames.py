"""Frame sources: which frame numbers a clip reads, from JPEG folders and from video files."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from evad.data import DataConfig, build_dataset
from evad.data.frames import FrameFolders, VideoFiles, clip_frame_numbers
from evad.errors import UserError

NUM_FRAMES = 20
HEIGHT, WIDTH = 32, 40
LEVEL = 10  # frame n is solid gray n * LEVEL, so a decoded frame tells which file it came from


def gray(number: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), number * LEVEL, dtype=np.uint8)


def write_folder(root: Path, video: str, template: str, numbers: range | list[int]) -> None:
    for n in numbers:
        path = root / template.format(video=video, frame=n)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), gray(n))


def write_video(path: Path, num_frames: int, fps: int = 30, rotation: int = 0, corner: bool = False) -> None:
    """A gray-level video with a key frame every 5 frames (so reads must seek and decode on); a
    `rotation` (degrees counterclockwise) goes in the display matrix, as phones store portrait video;
    `corner` marks the top left of every frame white, so that a turn shows which way it went."""
    av = pytest.importorskip("av")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if rotation:
            if not hasattr(stream, "set_display_rotation"):
                pytest.skip("this PyAV cannot write rotation metadata (PyAV >= 14 can)")
            stream.set_display_rotation(rotation)
        stream.gop_size = 5
        stream.options = {"crf": "10"} if codec == "libx264" else {"qscale": "2"}
        for n in range(1, num_frames + 1):
            image = gray(n)
            if corner:
                image[: HEIGHT // 4, : WIDTH // 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def levels(frames: np.ndarray) -> list[int]:
    """Frame number encoded in each frame (T, H, W, 3)."""
    return [round(float(f.mean()) / LEVEL) for f in frames]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[FrameFolders, VideoFiles]:
    root = tmp_path_factory.mktemp("frames")
    write_folder(root / "frames", "vid", "{video}/{video}_{frame:06d}.jpg", range(1, NUM_FRAMES + 1))
    (root / "videos").mkdir()
    write_video(root / "videos" / "vid.mp4", NUM_FRAMES)
    return (
        FrameFolders(root / "frames", "{video}/{video}_{frame:06d}.jpg"),
        VideoFiles(root / "videos", "{video}.mp4", fps=30),
    )


def test_clip_numbers_are_centred_and_clamped_at_both_ends() -> None:
    # 16x4: offsets -32 ... +28 around the keyframe.
    np.testing.assert_array_equal(clip_frame_numbers(100, 16, 4, last=1000), 100 + np.arange(-32, 29, 4))
    assert clip_frame_numbers(3, 4, 2, last=NUM_FRAMES).tolist() == [1, 1, 3, 5]
    assert clip_frame_numbers(19, 4, 2, last=NUM_FRAMES).tolist() == [15, 17, 19, 20]
    assert clip_frame_numbers(np.array([3, 19]), 4, 2, last=NUM_FRAMES).shape == (2, 4)


def test_folder_reads_the_requested_files_as_rgb(
    sources: tuple[FrameFolders, VideoFiles], tmp_path: Path
) -> None:
    folders, _ = sources
    assert folders.scan(["vid"]) == {"vid": NUM_FRAMES}
    frames = folders.read("vid", np.array([1, 1, 7, 20]))
    assert frames.shape == (4, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert levels(frames) == [1, 1, 7, 20]

    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 2] = 255  # red in OpenCV's BGR order
    (tmp_path / "red").mkdir()
    cv2.imwrite(str(tmp_path / "red" / "00001.jpg"), image)
    rgb = FrameFolders(tmp_path, "{video}/{frame:05d}.jpg").read("red", np.array([1]))[0]
    assert rgb[..., 0].mean() > 240 and rgb[..., 2].mean() < 15


@pytest.mark.parametrize("numbers", [[1, 2, 3], [8, 12, 16, 20], [13, 13, 17], [20, 20, 20], [2, 19]])
def test_video_gives_the_folder_frames_up_to_codec_error(
    sources: tuple[FrameFolders, VideoFiles], numbers: list[int]
) -> None:
    folders, videos = sources
    assert videos.scan(["vid"]) == {"vid": NUM_FRAMES}
    from_video = videos.read("vid", np.array(numbers))
    from_folder = folders.read("vid", np.array(numbers))
    assert levels(from_video) == numbers
    assert np.abs(from_video.astype(int) - from_folder.astype(int)).mean() < 4


def test_video_at_another_rate_is_resampled(tmp_path: Path) -> None:
    write_video(tmp_path / "slow.mp4", 10, fps=15)  # 10 frames over 2/3 s
    videos = VideoFiles(tmp_path, "{video}.mp4", fps=30)
    assert videos.scan(["slow"]) == {"slow": 20}
    # Frame n at 30 fps is shown at (n - 1) / 30 s: the 15 fps frame floor((n - 1) / 2) + 1.
    assert levels(videos.read("slow", np.array([1, 2, 3, 4, 19, 20]))) == [1, 1, 2, 2, 10, 10]
    # 25 fps frame j (from 0) is at 1.2 j 30-fps slots; as ffmpeg -r 30 each slot takes the nearest
    # (0 1 2 2 3 4 5 6 7 7 ...), not the last earlier one (0 0 1 2 3 4 5 5 6 7 ...).
    write_video(tmp_path / "pal.mp4", 10, fps=25)
    assert levels(videos.read("pal", np.arange(1, 11))) == [1, 2, 3, 3, 4, 5, 6, 7, 8, 8]


def test_frame_numbers_come_from_the_listing(tmp_path: Path) -> None:
    template = "{video}/img_{frame:05d}.jpg"
    write_folder(tmp_path, "gappy", template, [1, 2, 3, 5, 6])
    (tmp_path / "gappy" / "img_7.jpg").write_bytes(b"")  # not the template's zero padding
    (tmp_path / "gappy" / "notes.txt").write_text("")
    folders = FrameFolders(tmp_path, template)
    assert folders.scan(["gappy"]) == {"gappy": 6}
    folders.check("gappy", np.array([1, 2, 6]))
    with pytest.raises(UserError, match=r"missing frame file .*gappy/img_00004\.jpg"):
        folders.check("gappy", np.array([3, 4]))
    with pytest.raises(UserError, match=r"missing frame file .*gappy/img_00007\.jpg"):
        folders.check("gappy", np.array([7]))
    write_folder(tmp_path, "padded", template, [2, 3, 5])  # only template names: the vectorised path
    assert folders.scan(["padded"])["padded"] == 5
    with pytest.raises(UserError, match=r"missing frame file .*padded/img_00001\.jpg"):
        folders.check("padded", np.array([1, 2, 3]))
    folders.check("padded", np.array([2, 3, 5]))


def test_folder_errors_name_the_path(tmp_path: Path) -> None:
    folders = FrameFolders(tmp_path, "{video}/{frame:05d}.jpg")
    with pytest.raises(
        UserError, match=f"frame folder {re.escape(str(tmp_path / 'absent'))} .* does not exist"
    ):
        folders.scan(["absent"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        UserError,
        match=f"frame folder {re.escape(str(tmp_path / 'empty'))} holds no frames named like 00001\\.jpg",
    ):
        folders.scan(["empty"])
    with pytest.raises(UserError, match=re.escape("must contain '{frame}' once")):
        FrameFolders(tmp_path, "{video}/{frame}/x.jpg")


def test_corrupt_jpeg_names_the_file(tmp_path: Path) -> None:
    write_folder(tmp_path, "v", "{video}/{frame:05d}.jpg", [1, 2])
    (tmp_path / "v" / "00002.jpg").write_bytes(b"not a jpeg")
    folders = FrameFolders(tmp_path, "{video}/{frame:05d}.jpg")
    folders.scan(["v"])
    with pytest.raises(
        UserError, match=f"frame file {re.escape(str(tmp_path / 'v' / '00002.jpg'))} cannot be decoded"
    ):
        folders.read("v", np.array([1, 2]))


def test_video_errors_name_the_file(tmp_path: Path) -> None:
    pytest.importorskip("av")
    videos = VideoFiles(tmp_path, "{video}.mp4", fps=30)
    with pytest.raises(
        UserError, match=f"video file {re.escape(str(tmp_path / 'absent.mp4'))} .* does not exist"
    ):
        videos.scan(["absent"])
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match=f"cannot read video file {re.escape(str(tmp_path / 'broken.mp4'))}"):
        videos.scan(["broken"])
    write_video(tmp_path / "short.mp4", 5)
    videos.scan(["short"])
    with pytest.raises(
        UserError, match=f"video file {re.escape(str(tmp_path / 'short.mp4'))} has no frame 6"
    ):
        videos.check("short", np.array([5, 6]))


@pytest.mark.parametrize(("codec", "fmt"), [("libx264", "h264"), ("mpeg4", "m4v")])
def test_a_stream_without_duration_is_counted_by_decoding_and_a_corrupt_one_named(
    tmp_path: Path, codec: str, fmt: str
) -> None:
    """A raw elementary stream has no frame count or duration, so its frames are counted by decoding;
    a decode error there ended in PyAV's traceback instead of a line naming the file."""
    av = pytest.importorskip("av")
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV has no {codec} encoder here")
    path = tmp_path / f"raw.{fmt}"
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for n in range(1, 21):
            for packet in stream.encode(av.VideoFrame.from_ndarray(gray(n), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    videos = VideoFiles(tmp_path, "{video}." + fmt, fps=30)
    assert videos.scan(["raw"]) == {"raw": 24}  # 20 frames at 25 fps last 0.8 s: 24 frames at 30 fps
    data = path.read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    (tmp_path / f"bad.{fmt}").write_bytes(data[: len(data) // 3] + noise)
    with pytest.raises(
        UserError, match=f"cannot decode video file {re.escape(str(tmp_path / f'bad.{fmt}'))}"
    ):
        videos.scan(["bad"])


@pytest.mark.parametrize("rotation", [90, 270])
def test_video_with_rotation_metadata_gives_upright_frames(tmp_path: Path, rotation: int) -> None:
    """Training reads a phone's sideways-stored portrait video as players, ffmpeg (which extracted
    AVA's frames) and `evad detect` show it, turned counterclockwise by its rotation."""
    write_video(tmp_path / "stored.mp4", 12, corner=True)
    write_video(tmp_path / "turned.mp4", 12, rotation=rotation, corner=True)
    videos = VideoFiles(tmp_path, "{video}.mp4", fps=30)
    videos.scan(["stored", "turned"])
    numbers = np.array([1, 7, 12])
    stored, turned = videos.read("stored", numbers), videos.read("turned", numbers)
    assert turned.shape == (3, WIDTH, HEIGHT, 3)
    np.testing.assert_array_equal(turned, np.rot90(stored, rotation // 90, axes=(1, 2)))
    # counterclockwise: the stored top-left mark is shown bottom left (90) or top right (270)
    shown_mark = {90: turned[0, -1, 0], 270: turned[0, 0, -1]}[rotation]
    assert shown_mark.min() > 200 and turned[0, 0, 0].max() < 200


def test_ava_dataset_from_videos_matches_frame_folders(
    sources: tuple[FrameFolders, VideoFiles], tmp_path: Path
) -> None:
    folders, videos = sources
    (tmp_path / "rows.csv").write_text("vid,0,0.1,0.1,0.5,0.5,1,0\n")
    (tmp_path / "labelmap.pbtxt").write_text('item {\n  name: "stand"\n  id: 1\n}\n')
    cfg = DataConfig(
        root=str(tmp_path),
        frames=str(folders.root),
        val_annotations="rows.csv",
        labelmap="labelmap.pbtxt",
        fps=30.0,
        timestamp_start=0,
        num_frames=8,
        sampling_rate=3,
        test_short_side=HEIGHT,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    from_folders = build_dataset(cfg, "val")[0]["clip"]
    from_videos = build_dataset(replace(cfg, videos=str(videos.root)), "val")[0]["clip"]
    as_frames = (from_videos * 255).permute(1, 2, 3, 0).numpy()  # (3, T, h, w) -> (T, h, w, 3)
    assert levels(as_frames) == [1, 1, 1, 1, 1, 4, 7, 10]
    assert (from_videos - from_folders).abs().mean() * 255 < 4
